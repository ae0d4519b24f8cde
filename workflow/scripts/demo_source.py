from hftri_mimic.common.logs import to_file
from hftri_mimic.demo.generate import DemoSpec, generate_demo_source

with to_file(snakemake.log[0]):
    demo = dict(snakemake.params.demo)
    demo["echo_frames"] = tuple(demo["echo_frames"])
    generate_demo_source(
        source_dir=snakemake.params.source_dir,
        truth_dir=snakemake.output.truth,
        spec=DemoSpec(**demo),
        workers=snakemake.threads,
    )
