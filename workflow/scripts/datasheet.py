from hftri_mimic.common.logs import to_file
from hftri_mimic.dataset.manifest import write_datasheet

with to_file(snakemake.log[0]):
    write_datasheet(
        manifest=snakemake.input.manifest,
        labs=snakemake.input.labs,
        texts=snakemake.input.text,
        attrition=snakemake.input.attrition,
        splits=snakemake.input.splits,
        out=snakemake.output.sheet,
        figures_dir=snakemake.output.figures,
        echo_dicoms=snakemake.input.get("echo_dicoms"),
        windows={m: snakemake.input.get(f"{m}_window") for m in ("ecg", "echo") if snakemake.input.get(f"{m}_window")},
    )
