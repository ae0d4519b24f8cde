"""Training TGMM (docs/MODEL.md): configs (configuration), the model factory (factory), the data (data), cached
encoder features (features), one experiment per task and subset (experiment) and the training loop (loop)."""
