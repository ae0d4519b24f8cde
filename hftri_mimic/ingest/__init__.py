"""Getting the sources in (docs/CURATION.md, Sources and Ingest): the PhysioNet download (download) and each needed
table converted once to Parquet by DuckDB (tables)."""
