"""PTB-XL external validation (paper §5.2, Table 4; docs/PTBXL.md): labels and dataset (dataset)."""
