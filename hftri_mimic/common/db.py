"""DuckDB connections sized by the rule that opens them (docs/CURATION.md, Ingest: never by the node)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import duckdb


def connect(
    threads: int = 1, mem_mb: int | None = None, temp_dir: Path | str | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB limited to the rule's ``threads`` and ``resources.mem_mb``; sorts and joins
    that do not fit spill to ``temp_dir``."""
    con = duckdb.connect(config={"threads": max(1, int(threads))})
    con.execute("SET enable_progress_bar = false")  # job output goes to logs, where its redraws are noise
    if mem_mb:
        # Leave room for Python and Parquet buffers outside DuckDB's own accounting.
        con.execute(f"SET memory_limit = '{max(256, int(mem_mb * 0.75))}MB'")
    if temp_dir is not None:
        Path(temp_dir).mkdir(parents=True, exist_ok=True)
        con.execute(f"SET temp_directory = {sql_literal(str(temp_dir))}")
    con.execute("SET preserve_insertion_order = false")
    return con


def sql_literal(text: str) -> str:
    """A single-quoted SQL string literal (for file paths in views, which cannot take parameters)."""
    return "'" + text.replace("'", "''") + "'"


def register_parquet(con: duckdb.DuckDBPyConnection, **tables: Path | str) -> None:
    """Expose each Parquet file as a view named after its keyword."""
    for name, path in tables.items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({sql_literal(str(path))})")


def shard_ids(plan_path: Path | str) -> list[int]:
    """The shard numbers of a shard plan (an empty cohort has none). Here rather than beside the Zarr code:
    the Snakefile calls it, and importing polars and zarr would slow every ``snakemake`` start."""
    rows = duckdb.execute(f"SELECT DISTINCT shard FROM read_parquet({sql_literal(str(plan_path))}) ORDER BY shard")
    return [shard for (shard,) in rows.fetchall()]


def concept_sql(name: str) -> str:
    """The text of the SQL concept ``hftri_mimic/sql/<name>.sql``."""
    return resources.files("hftri_mimic.sql").joinpath(f"{name}.sql").read_text()


def run_concept(con: duckdb.DuckDBPyConnection, name: str, **params) -> duckdb.DuckDBPyConnection:
    """Run a concept with its ``$parameters`` bound by DuckDB (never formatted into the text)."""
    sql = concept_sql(name)
    used = {k: v for k, v in params.items() if f"${k}" in sql}
    missing = sorted(set(params) - set(used))
    if missing:
        raise ValueError(f"concept {name}.sql does not use parameter(s) {missing}")
    return con.execute(sql, used)


def copy_to_parquet(
    con: duckdb.DuckDBPyConnection,
    select_sql: str,
    out: Path | str,
    params: dict | None = None,
    sort: bool = True,
    compression_level: int = 3,
) -> int:
    """Write a query's result to a zstd Parquet file; return the number of rows written.

    ``sort`` orders the rows by all columns, so that a rerun writes the same bytes whatever the thread
    scheduling (callers whose query ends in a deterministic ORDER BY pass ``sort=False``). ``compression_level``:
    zstd's (3, its default; ingest writes at 1).
    """
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(out) + ".tmp")
    query = f"SELECT * FROM ({select_sql}) ORDER BY ALL" if sort else select_sql
    options = f"FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL {int(compression_level)}"
    con.execute(f"COPY ({query}) TO {sql_literal(str(tmp))} ({options})", params or {})
    tmp.replace(out)  # atomic: a killed job never leaves a half-written output under the final name
    # fetchall, not fetchone: it finishes the result, so the connection is free for the caller's next query
    return con.execute(f"SELECT count(*) FROM read_parquet({sql_literal(str(out))})").fetchall()[0][0]
