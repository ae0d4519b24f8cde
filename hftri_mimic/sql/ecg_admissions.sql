-- ECGs taken during an admission (HFTri-MIMIC cohort criterion 3, docs/CURATION.md, Cohort).
-- An ECG belongs to an admission when ecg_time lies in
-- [admittime + $start_offset_hours, dischtime + $end_offset_hours] of an admission of the same patient.
-- One row per (admission, ECG); an ECG inside two overlapping windows appears under both.
-- Parameters: $start_offset_hours, $end_offset_hours.
-- Inputs: admissions, ecg_record_list (views).
SELECT
    a.hadm_id,
    e.subject_id,
    e.study_id AS ecg_study_id,
    e.ecg_time,
    e.path AS ecg_path
FROM admissions AS a
JOIN ecg_record_list AS e
  ON e.subject_id = a.subject_id
 AND e.ecg_time >= a.admittime + to_microseconds(CAST($start_offset_hours * 3600e6 AS BIGINT))
 AND e.ecg_time <= a.dischtime + to_microseconds(CAST($end_offset_hours * 3600e6 AS BIGINT))
