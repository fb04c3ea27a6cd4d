"""Errors that mean "the user asked for something that cannot be done", reported in one sentence."""

from __future__ import annotations


class PipelineError(Exception):
    """A user-facing problem: the CLI prints it as one line and exits 2; Airflow shows it in the task log."""
