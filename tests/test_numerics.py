"""Portable CPU numerics (hftri_mimic/common/numerics.py): the workflow's jobs run torch's AVX2 kernels on any x86-64
machine, and those kernels give the same bits everywhere.

The digests below were computed under the cap on an AVX-512 machine (AMD EPYC); the same test on a machine of
another processor generation checks that the cap does what it promises. Without the cap, softmax, convolution and
GELU give other bits on that AVX-512 machine than on an AVX2 one."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

from hftri_mimic.common.numerics import (
    OPT_OUT_VARIABLE,
    PORTABLE_CPU_NUMERICS,
    cpu_numerics_mode,
    use_portable_cpu_numerics,
)

# Forward and backward of the operations TGMM's encoders and fusion are made of, on inputs drawn by numpy's PCG64
# (the same numbers on every machine); prints the SHA-256 of each result's float32 bytes.
KERNELS = """
import hashlib, json
import numpy as np
import torch
torch.set_num_threads(1)
rng = np.random.default_rng(0)
def t(*shape):
    return torch.from_numpy(rng.standard_normal(shape).astype(np.float32)).requires_grad_()
x, w, s = t(16, 96), t(96, 96), t(2, 12, 500)
conv = torch.nn.Conv1d(12, 8, 15)
layer = torch.nn.TransformerEncoderLayer(96, 4, 192, dropout=0.0, batch_first=True)
with torch.no_grad():
    for p in [*conv.parameters(), *layer.parameters()]:
        p.copy_(torch.from_numpy(rng.standard_normal(tuple(p.shape)).astype(np.float32) * 0.1))
outputs = {
    "matmul": x @ w,
    "softmax": torch.softmax(x, dim=1),
    "gelu": torch.nn.functional.gelu(x),
    "layer_norm": torch.nn.functional.layer_norm(x, (96,)),
    "conv1d": conv(s),
    "transformer": layer(x.reshape(2, 8, 96)),
}
loss = sum(o.square().mean() for o in outputs.values())
loss.backward()
outputs["grad_x"], outputs["grad_s"] = x.grad, s.grad
digest = {k: hashlib.sha256(v.detach().numpy().tobytes()).hexdigest()[:16] for k, v in outputs.items()}
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "digest": digest}))
"""

AVX2_DIGESTS = {
    "matmul": "31527f124b43e7d0",
    "softmax": "51b009b08ce870a2",
    "gelu": "aab6dafff365f7fd",
    "layer_norm": "c0375063b02ac218",
    "conv1d": "563ef35baf9a8a25",
    "transformer": "c7feb2a168e7e879",
    "grad_x": "60fbd71044643338",
    "grad_s": "61ca25e6951d0398",
}


def _kernels(environ: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", KERNELS], env=environ, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in PORTABLE_CPU_NUMERICS and k != OPT_OUT_VARIABLE}


def test_the_cap_is_set_on_x86_and_can_be_lifted():
    environ: dict[str, str] = {}
    assert use_portable_cpu_numerics(environ, "x86_64") == PORTABLE_CPU_NUMERICS
    assert environ == PORTABLE_CPU_NUMERICS and cpu_numerics_mode(environ, "x86_64") == "avx2"
    lifted = {OPT_OUT_VARIABLE: "native"}
    assert use_portable_cpu_numerics(lifted, "x86_64") == {} and lifted == {OPT_OUT_VARIABLE: "native"}
    arm: dict[str, str] = {}
    assert use_portable_cpu_numerics(arm, "aarch64") == {} and arm == {}
    assert cpu_numerics_mode(arm, "aarch64") == "native"


def test_capped_kernels_give_the_same_bits_on_every_machine():
    environ = _clean_environment()
    use_portable_cpu_numerics(environ)
    capped = _kernels(environ)
    assert capped["capability"] == "AVX2"
    assert capped["digest"] == AVX2_DIGESTS, (
        f"torch's AVX2 kernels gave other bits on this {platform.processor() or platform.machine()} than on the "
        f"machine the digests were taken on: {capped['digest']}"
    )


def test_every_workflow_job_runs_under_the_cap(trained_run):
    """The Snakefile sets the cap in the Snakemake process, so every job inherits it: the evaluation job records the
    instruction set its torch ran with."""
    record = json.loads((trained_run / "results/eval/environment.json").read_text())
    assert record["cpu_numerics"] == "avx2" and record["cpu_capability"] == "AVX2", record


def test_the_tests_compute_with_the_jobs_kernels():
    """conftest sets the cap before torch is imported, so in-process training matches the workflow's jobs."""
    import torch

    assert torch.backends.cpu.get_cpu_capability() == "AVX2"
