"""The demo source (docs/CURATION.md, Sources): a synthetic population (population) written as the three PhysioNet
trees with their real layouts and quirks (hosp, records, ecg, echo; generate writes them all), the code lists it draws
from (vocab), MIMIC-IV v3.1 row counts for the scale mode (calibrate), and a synthetic PTB-XL tree (ptbxl)."""
