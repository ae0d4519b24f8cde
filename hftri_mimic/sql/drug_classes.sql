-- Drug history (docs/CURATION.md, Dataset): classes of drugs prescribed before the reference time.
-- A patient has a drug class when a prescription of the patient started before the cutoff: the
-- reference time (the chosen echo study, else ECG, else admittime) or, with $before_admission, the index
-- admittime. Drug names are matched case-insensitively against each class's LIKE patterns.
-- Parameters: $classes (list of {name, pattern}), $before_admission (boolean).
-- Inputs: reference(subject_id, admittime, reference_time), prescriptions.
WITH patterns AS (
    SELECT c.name, lower(c.pattern) AS pattern FROM (SELECT unnest($classes) AS c)
)
SELECT DISTINCT
    r.subject_id,
    p.name AS drug_class
FROM reference AS r
JOIN prescriptions AS rx
  ON rx.subject_id = r.subject_id
 AND rx.starttime < CASE WHEN $before_admission THEN r.admittime ELSE r.reference_time END
JOIN patterns AS p
  ON lower(rx.drug) LIKE p.pattern
