-- Admissions with laboratory data (HFTri-MIMIC cohort criterion 2, docs/CURATION.md, Cohort).
-- An admission has labs when labevents holds at least one row of a configured item with its
-- hadm_id. Outpatient draws (hadm_id NULL) never count.
-- Parameters: $lab_itemids (list of itemids).
-- Inputs: labevents (view).
SELECT
    hadm_id,
    count(*) AS n_lab_rows,
    count(DISTINCT itemid) AS n_lab_items
FROM labevents
WHERE hadm_id IS NOT NULL
  AND list_contains($lab_itemids, itemid)
GROUP BY hadm_id
