from pathlib import Path

from hftri_mimic.common.logs import to_file
from hftri_mimic.echo.stage import ViewClassifierTraining, classifier_config, echo_settings, train_demo_classifier

with to_file(snakemake.log[0]):
    echo = {**snakemake.params.settings, "view_classifier": snakemake.params.classifier}
    training = {k: v for k, v in snakemake.params.classifier.items() if k != "weights"}
    train_demo_classifier(
        truth_dicoms=Path(snakemake.input.truth) / "echo_dicoms.parquet",
        echo_root=snakemake.params.echo_root,
        settings=echo_settings(echo),
        config=classifier_config(echo),
        training=ViewClassifierTraining(**training),
        weights_out=snakemake.output.weights,
        metrics_out=snakemake.output.metrics,
        threads=snakemake.threads,
    )
