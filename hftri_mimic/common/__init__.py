"""What every stage shares: DuckDB connections (db), job logs (logs), Zarr shard stores (storage), the named
exclusion (exclusions), file modes (privacy), the run's software record (environment), CPU numerics (numerics), a
rule's code inputs (rule_code) and report pages (report)."""
