# The project's Airflow image: the official Airflow 3 image plus the project's locked requirements and code.
# Used by every Airflow service of docker-compose.yml and by its MLflow server (same mlflow version as
# the pipeline's client). Everything is installed here, at build time: nothing is pip-installed when a
# container starts.
#
#   docker compose build          # or: docker build -t interest-pipeline-airflow .
ARG AIRFLOW_VERSION=3.3.2
FROM apache/airflow:${AIRFLOW_VERSION}-python3.11
ARG AIRFLOW_VERSION

ENV IEP_HOME=/opt/iep
WORKDIR /opt/iep

# 1. Dependencies (the full lock; layer cached until requirements.txt changes). Pinning apache-airflow
#    to the image's version keeps pip from swapping the Airflow that the image was built around.
COPY --chown=airflow:0 requirements.txt /opt/iep/requirements.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /opt/iep/requirements.txt

# The DAGs call dbt beside the interpreter (Path(sys.executable).parent / "dbt"); in images where pip
# installs console scripts elsewhere, link it there.
USER root
RUN bin_dir="$(python -c 'import sys, pathlib; print(pathlib.Path(sys.executable).parent)')" \
    && if [ ! -e "${bin_dir}/dbt" ]; then ln -s "$(command -v dbt)" "${bin_dir}/dbt"; fi \
    && mkdir -p /data /artifacts /mlflow/artifacts \
    && chown -R airflow:0 /opt/iep /data /artifacts /mlflow \
    && chmod -R g+rwX /opt/iep /data /artifacts /mlflow
USER airflow

# 2. The project: DAGs, the ml_tasks package, devstack (provisioning), the dbt project and the scripts.
COPY --chown=airflow:0 dags/ /opt/iep/dags/
COPY --chown=airflow:0 ml_tasks/ /opt/iep/ml_tasks/
COPY --chown=airflow:0 devstack/ /opt/iep/devstack/
COPY --chown=airflow:0 dbt_project/ /opt/iep/dbt_project/
COPY --chown=airflow:0 scripts/ /opt/iep/scripts/

ENV PYTHONPATH=/opt/iep \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/iep/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    IEP_DBT_PROJECT_DIR=/opt/iep/dbt_project \
    IEP_DATA_DIR=/data \
    IEP_ARTIFACT_DIR=/artifacts \
    IEP_MLFLOW_ARTIFACT_ROOT=/mlflow/artifacts \
    TF_CPP_MIN_LOG_LEVEL=2

# 3. dbt packages and the manifest that Cosmos renders build_warehouse from (no `dbt ls` at every parse).
RUN cd /opt/iep/dbt_project \
    && if [ -f packages.yml ] || [ -f dependencies.yml ]; then dbt deps --project-dir . --profiles-dir .; fi \
    && dbt parse --quiet --project-dir . --profiles-dir . \
    && chmod -R g+rwX /opt/iep/dbt_project
