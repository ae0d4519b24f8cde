-- Medical history (docs/CURATION.md, Dataset): groups of ICD codes recorded before the index admission.
-- A patient has a history group when any admission that started before the index admittime (and, with
-- $include_index_admission, the index admission itself) carries a code of that group. Codes are
-- compared without dots, upper case; patterns use SQL LIKE syntax.
-- Parameters: $groups (list of {name, icd_version, pattern}), $include_index_admission (boolean).
-- Inputs: reference(subject_id, hadm_id, admittime), admissions, diagnoses_icd.
WITH patterns AS (
    SELECT g.name, g.icd_version, g.pattern FROM (SELECT unnest($groups) AS g)
)
SELECT DISTINCT
    r.subject_id,
    p.name AS history_group
FROM reference AS r
JOIN admissions AS a
  ON a.subject_id = r.subject_id
 AND (a.admittime < r.admittime OR ($include_index_admission AND a.hadm_id = r.hadm_id))
JOIN diagnoses_icd AS d ON d.hadm_id = a.hadm_id
JOIN patterns AS p
  ON d.icd_version = p.icd_version
 AND upper(replace(trim(d.icd_code), '.', '')) LIKE p.pattern
