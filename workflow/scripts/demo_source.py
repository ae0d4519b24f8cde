from hftri_mimic.demo.generate import DemoSpec, generate_demo_source
from hftri_mimic.logs import to_file

with to_file(snakemake.log[0]):
    demo = dict(snakemake.params.demo)
    demo["echo_frames"] = tuple(demo["echo_frames"])
    generate_demo_source(
        source_dir=snakemake.params.source_dir,
        truth_dir=snakemake.output.truth,
        spec=DemoSpec(**demo),
        workers=snakemake.threads,
    )
