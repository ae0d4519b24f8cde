from hftri_mimic.dataset import write_datasheet
from hftri_mimic.logs import to_file

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
    )
