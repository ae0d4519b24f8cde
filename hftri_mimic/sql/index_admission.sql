-- Index admission per patient and the records chosen in it (HFTri-MIMIC cohort criteria 5-6, docs/CURATION.md, Cohort).
-- Eligible admissions (view `eligible`, one row per admission that passed every required criterion)
-- are ranked per patient by admittime ($order = 'first' keeps the earliest, 'last' the latest; ties by
-- hadm_id). In the index admission the echo study is the first one in the window; the ECG is the one
-- closest in time to that echo study (or, without an echo study, the first in the window); ties go to
-- the earlier ECG, then the smaller study_id.
-- Parameters: $order ('first' | 'last').
-- Inputs: eligible(subject_id, hadm_id, admittime, dischtime, age, gender, race),
--         ecg_in_admission(hadm_id, ecg_study_id, ecg_time, ecg_path),
--         echo_in_admission(hadm_id, echo_study_id, echo_time) (views; may be empty).
WITH ranked AS (
    SELECT
        *,
        row_number() OVER (
            PARTITION BY subject_id
            ORDER BY
                CASE WHEN $order = 'first' THEN epoch_us(admittime) ELSE -epoch_us(admittime) END,
                hadm_id
        ) AS admission_rank
    FROM eligible
),
index_adm AS (
    SELECT * EXCLUDE (admission_rank) FROM ranked WHERE admission_rank = 1
),
first_echo AS (
    SELECT hadm_id, echo_study_id, echo_time
    FROM echo_in_admission
    WHERE hadm_id IN (SELECT hadm_id FROM index_adm)
    QUALIFY row_number() OVER (PARTITION BY hadm_id ORDER BY echo_time, echo_study_id) = 1
),
closest_ecg AS (
    SELECT e.hadm_id, e.ecg_study_id, e.ecg_time, e.ecg_path
    FROM ecg_in_admission AS e
    JOIN index_adm AS i USING (hadm_id)
    LEFT JOIN first_echo AS f USING (hadm_id)
    QUALIFY row_number() OVER (
        PARTITION BY e.hadm_id
        ORDER BY
            CASE WHEN f.echo_time IS NULL THEN 0
                 ELSE abs(epoch_us(e.ecg_time) - epoch_us(f.echo_time)) END,
            e.ecg_time,
            e.ecg_study_id
    ) = 1
)
SELECT
    i.subject_id,
    i.hadm_id,
    i.admittime,
    i.dischtime,
    i.age,
    i.gender,
    i.race,
    c.ecg_study_id,
    c.ecg_time,
    c.ecg_path,
    f.echo_study_id,
    f.echo_time
FROM index_adm AS i
LEFT JOIN first_echo AS f USING (hadm_id)
LEFT JOIN closest_ecg AS c USING (hadm_id)
ORDER BY i.subject_id
