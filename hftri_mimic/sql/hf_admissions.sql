-- Admissions carrying a heart-failure diagnosis code (docs/CURATION.md, Labels).
-- Codes are compared without dots and in upper case, so '428.0' and 'i5022' match too.
-- Patterns use SQL LIKE syntax ('I50%' = any code starting with I50), per ICD version.
-- Parameters: $icd9_patterns, $icd10_patterns (lists of LIKE patterns).
-- Inputs: diagnoses_icd (view).
WITH patterns AS (
    SELECT 9 AS icd_version, unnest($icd9_patterns) AS pattern
    UNION ALL
    SELECT 10 AS icd_version, unnest($icd10_patterns) AS pattern
)
SELECT DISTINCT
    d.subject_id,
    d.hadm_id
FROM diagnoses_icd AS d
JOIN patterns AS p
  ON d.icd_version = p.icd_version
 AND upper(replace(trim(d.icd_code), '.', '')) LIKE p.pattern
