"""ECG stage (docs/SIGNALS.md, ECG): one WFDB record to an ST-MEM-ready array with its measurements (signal), and the
stage's plan, shards and thresholds (stage)."""
