"""The HFTri-MIMIC dataset (docs/CURATION.md, Dataset): EHR features (ehr), the lab text (text), the manifest and
datasheet (manifest) and the splits (splits)."""
