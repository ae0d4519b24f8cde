"""Write the PTB-XL-layout demo tree and its ground truth (hftri_mimic/demo/ptbxl.py)."""

from pathlib import Path

from hftri_mimic.demo.ptbxl import PtbxlDemoSpec, generate_ptbxl
from hftri_mimic.logs import to_file
from hftri_mimic.storage import write_parquet_atomic

with to_file(snakemake.log[0]):
    truth = generate_ptbxl(
        Path(snakemake.output.database).parent,
        PtbxlDemoSpec(
            n_records=snakemake.params.demo["n_records"],
            seed=snakemake.params.demo["seed"],
            records100=True,
        ),
    )
    write_parquet_atomic(truth, snakemake.output.truth)
