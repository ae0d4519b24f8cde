"""Evaluating TGMM (docs/MODEL.md): metric functions with confidence intervals, tables and figures (metrics), the
workflow's per-task evaluation of saved predictions (tasks), paired significance tests (significance), baselines and
ablations (compare), the seed spread (seeds) and the README's result block (readme_results)."""
