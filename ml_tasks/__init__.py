"""Interest-evolution pipeline: the ML and data logic, runnable without Airflow.

Importing this package has no side effects; heavy libraries (tensorflow, mlflow, duckdb) are
imported only inside the functions that need them.
"""

__version__ = "0.1.0"
