"""Write the PTB-XL-layout demo tree and its ground truth (hftri_mimic/demo/ptbxl.py)."""

from pathlib import Path

from hftri_mimic.common.logs import to_file
from hftri_mimic.common.storage import write_parquet_atomic
from hftri_mimic.demo.ptbxl import PtbxlDemoSpec, generate_ptbxl

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
