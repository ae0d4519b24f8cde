-- ECGs taken during an admission (HFTri-MIMIC cohort criterion 3, docs/CURATION.md, Cohort).
-- An ECG belongs to an admission when ecg_time lies in the admission's window (admission_windows.sql) of an
-- admission of the same patient. One row per (admission, ECG); an ECG inside two overlapping windows appears under
-- both.
-- Inputs: admission_windows, ecg_record_list (views).
SELECT
    w.hadm_id,
    e.subject_id,
    e.study_id AS ecg_study_id,
    e.ecg_time,
    e.path AS ecg_path
FROM admission_windows AS w
JOIN ecg_record_list AS e
  ON e.subject_id = w.subject_id
 AND e.ecg_time BETWEEN w.window_start AND w.window_end
