-- Eligibility of every admission for the cohort (HFTri-MIMIC cohort criteria 1-5, docs/CURATION.md, Cohort): one row
-- per admissions row of the source, one column per criterion, and the first criterion the admission fails.
-- The criteria, in the order the attrition table applies them:
--   ingested     the admissions row passed ingest (rows excluded there are counted here too, with hadm_id NULL)
--   has_patient  the subject has a usable patients row (anchor age and year give the age at admission)
--   is_adult     age at admission >= $min_age
--   has_lab     a configured lab item was measured during the admission   (a criterion only when $require_lab)
--   has_ecg      an ECG lies in the admission's ECG window                  (only when $require_ecg)
--   has_echo     an echo study lies in the admission's echo window          (only when $require_echo)
-- first_failed is the name of the first of these columns that is false for a criterion in force; NULL means the
-- admission is eligible. A patient leaves the cohort at the criterion that their furthest admission failed.
-- Parameters: $min_age, $require_lab, $require_ecg, $require_echo.
-- Inputs: aged (concept admission_age), admission_exclusions(subject_id), lab_in_admission(hadm_id),
--         ecg_in_admission(hadm_id), echo_in_admission(hadm_id) (views; each may be empty).
WITH criteria AS (
    SELECT
        a.subject_id,
        a.hadm_id,
        a.admittime,
        a.dischtime,
        a.age,
        a.gender,
        a.race,
        true AS ingested,
        -- anchor age and year are never empty after ingest, so a NULL age means the patients row is missing
        a.age IS NOT NULL AS has_patient,
        coalesce(a.age >= $min_age, false) AS is_adult,
        a.hadm_id IN (SELECT hadm_id FROM lab_in_admission) AS has_lab,
        a.hadm_id IN (SELECT hadm_id FROM ecg_in_admission) AS has_ecg,
        a.hadm_id IN (SELECT hadm_id FROM echo_in_admission) AS has_echo
    FROM aged AS a
    UNION ALL BY NAME
    SELECT
        subject_id,
        false AS ingested,
        false AS has_patient,
        false AS is_adult,
        false AS has_lab,
        false AS has_ecg,
        false AS has_echo
    FROM admission_exclusions
)
SELECT
    *,
    CASE
        WHEN NOT ingested THEN 'ingested'
        WHEN NOT has_patient THEN 'has_patient'
        WHEN NOT is_adult THEN 'is_adult'
        WHEN $require_lab AND NOT has_lab THEN 'has_lab'
        WHEN $require_ecg AND NOT has_ecg THEN 'has_ecg'
        WHEN $require_echo AND NOT has_echo THEN 'has_echo'
    END AS first_failed
FROM criteria
