"""The command line: global options on either side of the step name, one-sentence errors."""

from __future__ import annotations

import json

import duckdb

from ml_tasks.cli import COMMANDS, _parser, main
from tests.dbt.test_in_memory_agrees import FIXTURE


def test_every_step_has_a_handler():
    steps = set(_parser()._subparsers._group_actions[0].choices)  # noqa: SLF001 (argparse has no public API)
    assert steps == set(COMMANDS)


def test_global_options_work_before_and_after_the_step(tmp_path, capsys):
    before, after = tmp_path / "before.duckdb", tmp_path / "after.duckdb"
    assert main(["--warehouse", str(before), "ingest", "--events", str(FIXTURE)]) == 0
    assert main(["ingest", "--events", str(FIXTURE), "--warehouse", str(after), "-v"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["rows_loaded"] for r in lines] == [267, 267]
    for path in (before, after):
        con = duckdb.connect(str(path), read_only=True)
        assert con.execute("select count(*) from raw.events").fetchone()[0] == 267
        con.close()


def test_a_missing_file_is_one_sentence_and_exit_2(tmp_path, capsys):
    assert main(["ingest", "--events", str(tmp_path / "nope.csv"), "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {tmp_path / 'nope.csv'}: no such file or folder"


def test_run_folders_are_injective_and_confined(tmp_path):
    import pytest

    from ml_tasks.config import Paths
    from ml_tasks.errors import PipelineError

    paths = Paths.from_env(data_dir=tmp_path, artifact_dir=tmp_path / "artifacts")
    root = paths.artifact_dir / "train_interest_model"
    ids = ["manual__2026-01-01T00:00:00+00:00", "..", "a/../../b", "a b", "a_b", "a%20b", "a~20b", "ü", "."]
    folders = [paths.run_dir("train_interest_model", i) for i in ids]
    assert len(set(folders)) == len(ids)  # injective
    for folder in folders:
        assert folder.parent == root and folder.resolve().parent == root.resolve()  # confined
    assert paths.run_dir("train_interest_model", "scheduled__x").name == "scheduled__x"  # readable
    assert "%" not in paths.run_dir("train_interest_model", ids[0]).name  # MLflow decodes %XX in artifact paths
    with pytest.raises(PipelineError):
        paths.run_dir("train_interest_model", "")
    with pytest.raises(PipelineError):
        paths.run_dir("../x", "run")
