"""The project's servers on this machine: Airflow 3, MLflow, the model server (``make airflow|mlflow|serve``).

    python -m devstack airflow|mlflow|model|provision|compose-env --help

Modules, one concern each:

- :mod:`devstack.env`: the servers' environment, host and ports (pipeline paths from ``ml_tasks.config``);
- :mod:`devstack.credentials`: the generated Airflow login (mode 600) and the compose ``.env`` secrets;
- :mod:`devstack.supervisor`: child processes stopped together (subreaper, parent-death signal);
- :mod:`devstack.health`: port and HTTP health checks;
- :mod:`devstack.provision`: Airflow pools/variables/connections and the dbt manifest;
- :mod:`devstack.servers`: ``serve_airflow``, ``serve_mlflow``, ``serve_model``;
- :mod:`devstack.harness`: :func:`~devstack.harness.start_airflow` / :func:`~devstack.harness.start_mlflow`
  run the CLI in the background for tests and return a :class:`~devstack.harness.Server`.

Standard library only, except where the pipeline's settings are read (``ml_tasks.config``, which is
standard library too) and where ``model`` checks the registry alias (mlflow). ``compose-env`` imports
nothing outside the standard library, so it runs with a plain ``python3`` and no virtual environment.
"""
