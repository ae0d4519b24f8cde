"""CPU numerics that give the same numbers on every x86-64 machine with AVX2.

PyTorch chooses its CPU kernels by the processor's instruction set: ATen's own kernels (softmax, reductions),
oneDNN (convolutions, GELU) and MKL (matrix products) each have AVX2 and AVX-512 code paths whose results differ in
the last bits. Measured on one AVX-512 machine (hftri_mimic tests, ``test_numerics.py``): softmax, a 1-D
convolution and GELU give other bits with the AVX2 path than with the AVX-512 one. Over a few hundred training steps
such differences become different models: the default demo's ECG diagnosis accuracy was 0.679 on one CI machine and
0.595 on another, from the same lock and the same seeds.

The workflow therefore caps the three libraries at AVX2 in every job (the environment is inherited by each job's
process, and a cluster job reads the Snakefile, which sets it again). Every x86-64 server of the last decade has
AVX2, so a run anywhere reproduces another's numbers digit for digit (same lock, same thread counts); the price is
the speed of AVX-512 kernels. ``HFTRI_CPU_NUMERICS=native`` in the environment lifts the cap (the fastest kernels
of this machine; numbers then match only runs on the same kind of processor). Other processors (aarch64) are left
as they are: the variables concern x86 code paths only.
"""

from __future__ import annotations

import os
import platform
from collections.abc import MutableMapping

OPT_OUT_VARIABLE = "HFTRI_CPU_NUMERICS"

# ATen's dispatch (torch/csrc: ATEN_CPU_CAPABILITY), oneDNN's ISA cap and MKL's Conditional Numerical
# Reproducibility (STRICT: bitwise equal results, independent of memory alignment).
PORTABLE_CPU_NUMERICS = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "AVX2,STRICT",
}

X86_64 = {"x86_64", "amd64"}


def cpu_numerics_mode(environ: MutableMapping[str, str] | None = None, machine: str | None = None) -> str:
    """``"avx2"`` where the portable kernels apply, ``"native"`` where lifted or not an x86-64 machine."""
    environ = os.environ if environ is None else environ
    machine = (machine or platform.machine()).lower()
    if machine not in X86_64 or environ.get(OPT_OUT_VARIABLE, "").lower() == "native":
        return "native"
    return "avx2"


def use_portable_cpu_numerics(
    environ: MutableMapping[str, str] | None = None, machine: str | None = None
) -> dict[str, str]:
    """Set :data:`PORTABLE_CPU_NUMERICS` in ``environ`` (``os.environ`` by default) unless lifted; returns what was
    set. Must run before torch is imported in the process whose kernels it should govern (the workflow sets it in
    the Snakemake process, whose jobs inherit it)."""
    environ = os.environ if environ is None else environ
    if cpu_numerics_mode(environ, machine) == "native":
        return {}
    environ.update(PORTABLE_CPU_NUMERICS)
    return dict(PORTABLE_CPU_NUMERICS)
