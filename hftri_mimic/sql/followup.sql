-- Follow-up and incident heart failure after the index admission (HFTri-MIMIC prognosis subset, docs/CURATION.md, Labels).
-- Only patients without prevalent HF are followed. Follow-up admissions are later admissions starting
-- at least $min_days after the index discharge.
-- Event: the first follow-up admission with an HF code; time = days from index admittime to its admittime.
-- Otherwise censored at the discharge of the last follow-up admission (the patient is known to be
-- HF-free until then), or at the date of death when $censor_at_death and it is later.
-- No follow-up admission: has_followup = false, not in the prognosis subset.
-- Prevalent patients: has_followup = false, incident_hf and followup_days NULL.
-- Parameters: $min_days, $censor_at_death.
-- Inputs: index_admissions, prevalent_hf(subject_id, prevalent_hf), admissions, patients,
--         hf_admissions(subject_id, hadm_id).
WITH followed AS (
    SELECT i.subject_id, i.admittime, i.dischtime
    FROM index_admissions AS i
    JOIN prevalent_hf AS p USING (subject_id)
    WHERE NOT p.prevalent_hf
),
later AS (
    SELECT
        f.subject_id,
        a.admittime,
        a.dischtime,
        h.hadm_id IS NOT NULL AS has_hf_code
    FROM followed AS f
    JOIN admissions AS a
      ON a.subject_id = f.subject_id
     AND a.admittime >= f.dischtime + to_days(CAST($min_days AS INTEGER))
    LEFT JOIN hf_admissions AS h
      ON h.hadm_id = a.hadm_id
),
summary AS (
    SELECT
        subject_id,
        count(*) AS n_followup_admissions,
        min(admittime) FILTER (WHERE has_hf_code) AS event_time,
        max(dischtime) AS last_discharge
    FROM later
    GROUP BY subject_id
)
SELECT
    i.subject_id,
    coalesce(s.n_followup_admissions, 0) > 0 AS has_followup,
    CASE WHEN p.prevalent_hf THEN NULL
         WHEN s.subject_id IS NULL THEN NULL
         ELSE s.event_time IS NOT NULL END AS incident_hf,
    CASE WHEN p.prevalent_hf OR s.subject_id IS NULL THEN NULL
         ELSE date_diff('second', i.admittime, coalesce(
                  s.event_time,
                  CASE WHEN $censor_at_death AND CAST(pt.dod AS TIMESTAMP) > s.last_discharge
                       THEN CAST(pt.dod AS TIMESTAMP)
                       ELSE s.last_discharge END)) / 86400.0
    END AS followup_days,
    coalesce(s.n_followup_admissions, 0) AS n_followup_admissions
FROM index_admissions AS i
JOIN prevalent_hf AS p USING (subject_id)
JOIN patients AS pt USING (subject_id)
LEFT JOIN summary AS s USING (subject_id)
ORDER BY i.subject_id
