-- Where each record of a list (ECGs or echo studies) falls against its patient's admission windows
-- (admission_windows.sql), counted per place: how many records the window leaves out, and why that may be.
--   in_window:           inside at least one admission's window (a cohort candidate);
--   before_window:       within $near_hours before a window's start and in none: typically an emergency-department
--                        record before admittime, or a machine clock behind the hospital's;
--   after_window:        within $near_hours after a window's end and in none (a clock ahead, or after discharge);
--   away_from_admissions: further from every window (outpatient records);
--   no_admission:        the patient has no admission in the source.
-- One row per place that has records. Parameters: $near_hours. Inputs: admission_windows, records (subject_id,
-- record_time).
WITH placed AS (
    SELECT
        r.subject_id,
        CASE
            WHEN bool_or(r.record_time BETWEEN w.window_start AND w.window_end) THEN 'in_window'
            WHEN count(w.hadm_id) = 0 THEN 'no_admission'
            WHEN bool_or(r.record_time < w.window_start
                         AND r.record_time >= w.window_start - to_microseconds(CAST($near_hours * 3600e6 AS BIGINT)))
                THEN 'before_window'
            WHEN bool_or(r.record_time > w.window_end
                         AND r.record_time <= w.window_end + to_microseconds(CAST($near_hours * 3600e6 AS BIGINT)))
                THEN 'after_window'
            ELSE 'away_from_admissions'
        END AS place
    FROM records AS r
    LEFT JOIN admission_windows AS w ON w.subject_id = r.subject_id
    GROUP BY r.record_id, r.subject_id
)
SELECT place, count(*) AS n_records, count(DISTINCT subject_id) AS n_subjects
FROM placed
GROUP BY place
ORDER BY CASE place WHEN 'in_window' THEN 0 WHEN 'before_window' THEN 1 WHEN 'after_window' THEN 2
                    WHEN 'away_from_admissions' THEN 3 ELSE 4 END
