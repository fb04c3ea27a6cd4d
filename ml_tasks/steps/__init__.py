"""One function per pipeline step: load -> pure work -> save -> track, returning a small JSON-safe dict.

``data`` (generate, ingest, build, export), ``state`` (the per-run folder the steps share), ``train``,
``evaluate``, ``register`` (and the gate), ``score``, ``status``. The DAGs and the CLI call them through
``ml_tasks.pipelines``; arrays, models and tables go to files and MLflow, the return values carry
paths, ids and small metrics only.
"""
