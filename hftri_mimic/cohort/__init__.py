"""Cohort and labels (docs/CURATION.md, Cohort and Labels): the workflow's cohort rules, each running SQL concepts
from hftri_mimic/sql/ (concepts)."""
