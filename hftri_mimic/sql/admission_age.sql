-- Age at admission (MIMIC-IV's anchor logic), one row per admission.
-- age = anchor_age + year(admittime) - anchor_year. Patients older than 89 are shown with
-- anchor_age 91 in MIMIC-IV, so their ages are not exact; this is how MIMIC-IV defines age.
-- An admission whose subject has no patients row (e.g. the row was excluded at ingest) is kept with
-- age, gender NULL, so that the attrition counts it.
-- Inputs: admissions, patients (views).
SELECT
    a.subject_id,
    a.hadm_id,
    a.admittime,
    a.dischtime,
    p.anchor_age + year(a.admittime) - p.anchor_year AS age,
    p.gender,
    a.race
FROM admissions AS a
LEFT JOIN patients AS p USING (subject_id)
