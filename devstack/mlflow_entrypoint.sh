#!/usr/bin/env bash
# Entrypoint of docker-compose.yml's MLflow server: writes the basic-auth app's configuration (mode 600: it
# holds the database password) from MLFLOW_AUTH_DATABASE_URI to MLFLOW_AUTH_CONFIG_PATH, then runs the
# command (mlflow server ... --app-name basic-auth). `make stack` writes the same file from Python.
set -euo pipefail
python -m devstack mlflow-auth config "${MLFLOW_AUTH_CONFIG_PATH:?}"
exec "$@"
