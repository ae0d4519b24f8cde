"""Ingest (docs/CURATION.md, Ingest) beyond its faults (those are in test_faults.py): which columns a table keeps."""

from __future__ import annotations

import polars as pl
from reference_data import mimic_demo_hosp

from hftri_mimic.ingest.tables import TABLES, check_source_table, ingest_table


def test_needed_columns_hold_the_same_rows_as_all_columns(tmp_path):
    """``columns: needed`` writes the needed columns in the file's order, with the rows and values of ``all``."""
    for name in ("labevents", "admissions", "prescriptions"):
        src = mimic_demo_hosp() / f"{name}.csv.gz"
        header = check_source_table(name, src)
        kept = {c: ingest_table(name, src, tmp_path / f"{name}.{c}.parquet", columns=c) for c in ("needed", "all")}
        assert kept["needed"] == kept["all"] > 0
        needed = pl.read_parquet(tmp_path / f"{name}.needed.parquet")
        every = pl.read_parquet(tmp_path / f"{name}.all.parquet")
        assert needed.columns == [c for c in header if c in TABLES[name].needed]
        assert every.columns == header
        assert needed.equals(every.select(needed.columns)), f"{name}: rows differ between needed and all"
