"""Data: loading logs (``ingest``), the warehouse (``warehouse``: dbt build and Parquet exports), the
serving tables (``serving_store``) and the synthetic generator (``synthetic``). The only part of the
package that opens DuckDB."""
