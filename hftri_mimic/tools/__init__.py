"""Tools run on demand, never by the workflow: the benchmarks (bench), the GPU check of training (gpu_check) and the
check that explanations find the demo's planted signal (planted_check). No runtime module imports them."""
