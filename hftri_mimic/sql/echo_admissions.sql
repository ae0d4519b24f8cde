-- Echocardiogram studies done during an admission (HFTri-MIMIC cohort criterion 4, docs/CURATION.md, Cohort).
-- A study belongs to an admission when study_datetime lies in
-- [admittime + $start_offset_hours, dischtime + $end_offset_hours] of an admission of the same patient.
-- One row per (admission, study).
-- Parameters: $start_offset_hours, $end_offset_hours.
-- Inputs: admissions, echo_study_list (views).
SELECT
    a.hadm_id,
    s.subject_id,
    s.study_id AS echo_study_id,
    s.study_datetime AS echo_time
FROM admissions AS a
JOIN echo_study_list AS s
  ON s.subject_id = a.subject_id
 AND s.study_datetime >= a.admittime + to_microseconds(CAST($start_offset_hours * 3600e6 AS BIGINT))
 AND s.study_datetime <= a.dischtime + to_microseconds(CAST($end_offset_hours * 3600e6 AS BIGINT))
