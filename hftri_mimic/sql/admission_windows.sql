-- The window of each admission in which its ECGs and echo studies count (HFTri-MIMIC cohort criteria 3-4,
-- docs/CURATION.md, Cohort: "all three modalities within the same admission period").
-- window_start = start + $start_offset_hours, where start is
--   'admittime': the hospital admission (the default: the paper's admission period), or
--   'edregtime': the emergency-department registration when the admission came through the ED and it is earlier
--                (ED ECGs are taken before admittime), else admittime;
-- window_end = dischtime + $end_offset_hours. Both ends are inside the window.
-- One row per admission. Parameters: $start_from, $start_offset_hours, $end_offset_hours. Input: admissions (view).
SELECT
    hadm_id,
    subject_id,
    CASE WHEN $start_from = 'edregtime' THEN least(coalesce(edregtime, admittime), admittime) ELSE admittime END
        + to_microseconds(CAST($start_offset_hours * 3600e6 AS BIGINT)) AS window_start,
    dischtime + to_microseconds(CAST($end_offset_hours * 3600e6 AS BIGINT)) AS window_end
FROM admissions
