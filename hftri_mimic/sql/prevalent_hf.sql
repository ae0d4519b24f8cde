-- Prevalent heart failure at the index admission (docs/CURATION.md, Labels).
-- A patient has prevalent HF when an HF code is on the index admission or on any earlier admission
-- (admittime before the index admittime); with $lookback_days set, only earlier admissions starting
-- at most that many days before the index admittime count.
-- Parameters: $lookback_days (integer or NULL for all history).
-- Inputs: index_admissions(subject_id, hadm_id, admittime), admissions, hf_admissions(subject_id, hadm_id).
SELECT
    i.subject_id,
    count(h.hadm_id) > 0 AS prevalent_hf,
    bool_or(h.hadm_id = i.hadm_id) AS hf_on_index_admission
FROM index_admissions AS i
LEFT JOIN admissions AS a
  ON a.subject_id = i.subject_id
 AND (a.hadm_id = i.hadm_id
      OR (a.admittime < i.admittime
          AND ($lookback_days IS NULL
               OR a.admittime >= i.admittime - to_days(CAST($lookback_days AS INTEGER)))))
LEFT JOIN hf_admissions AS h
  ON h.hadm_id = a.hadm_id
GROUP BY i.subject_id
