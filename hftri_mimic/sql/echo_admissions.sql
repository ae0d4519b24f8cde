-- Echocardiogram studies done during an admission (HFTri-MIMIC cohort criterion 4, docs/CURATION.md, Cohort).
-- A study belongs to an admission when study_datetime lies in the admission's window (admission_windows.sql) of an
-- admission of the same patient. One row per (admission, study).
-- Inputs: admission_windows, echo_study_list (views).
SELECT
    w.hadm_id,
    s.subject_id,
    s.study_id AS echo_study_id,
    s.study_datetime AS echo_time
FROM admission_windows AS w
JOIN echo_study_list AS s
  ON s.subject_id = w.subject_id
 AND s.study_datetime BETWEEN w.window_start AND w.window_end
