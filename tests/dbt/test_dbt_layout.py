"""The dbt project's layout, read from its files (no build, no dbt): dbt Labs' layering staging ->
intermediate -> marts, one ``_<folder>__models.yml`` per model folder, and every model and column
documented there.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

MODELS = Path(__file__).resolve().parents[2] / "dbt_project" / "models"
LAYERS = ("staging", "intermediate", "marts")
REF = re.compile(r"""\bref\(\s*['"]([A-Za-z0-9_]+)['"]\s*\)""")
SQL_FILES = sorted(MODELS.rglob("*.sql"))


def layer(path: Path) -> str:
    return path.relative_to(MODELS).parts[0]


def documented() -> dict[str, dict]:
    models = {}
    for yml in MODELS.rglob("_*__models.yml"):
        for model in yaml.safe_load(yml.read_text()).get("models", []):
            models[model["name"]] = model | {"_yml": yml}
    return models


def test_models_live_in_the_three_layers():
    assert {layer(p) for p in SQL_FILES} == set(LAYERS)


@pytest.mark.parametrize("path", SQL_FILES, ids=lambda p: p.stem)
def test_a_model_reads_only_its_own_layer_or_earlier_ones(path):
    layer_of = {p.stem: layer(p) for p in SQL_FILES}
    mine = LAYERS.index(layer(path))
    refs = set(REF.findall(path.read_text()))
    assert refs <= set(layer_of), f"{path.stem} refs an unknown model"
    later = sorted(r for r in refs if LAYERS.index(layer_of[r]) > mine)
    assert not later, f"{path.stem} ({layer(path)}) reads {later} from a later layer"
    if layer(path) == "staging":
        assert not refs, f"{path.stem}: staging reads sources only"
    else:
        assert "source(" not in path.read_text(), f"{path.stem}: only staging reads the raw sources"


def test_every_model_folder_has_its_models_yml():
    for folder in sorted({p.parent for p in SQL_FILES}):
        assert (folder / f"_{folder.name}__models.yml").is_file(), folder


def test_every_model_and_its_columns_are_documented_beside_it():
    docs = documented()
    for path in SQL_FILES:
        model = docs.get(path.stem)
        assert model is not None, f"{path.stem} has no entry in a _<folder>__models.yml"
        assert model["_yml"].parent == path.parent, f"{path.stem} is documented in {model['_yml']}"
        assert model.get("description"), f"{path.stem} has no description"
        assert model.get("columns"), f"{path.stem} lists no columns"
        for column in model["columns"]:
            assert column.get("description"), f"{path.stem}.{column['name']} has no description"
