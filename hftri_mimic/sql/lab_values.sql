-- Lab values of the index admission (HFTri-MIMIC lab modality, docs/CURATION.md, Cohort and Dataset).
-- For each cohort patient and each configured item, the result (lab_candidates with no exclusion)
-- closest in time to the reference time (the chosen echo study; without one the chosen ECG; without
-- either the admittime). Ties: the earlier charttime, then the smaller labevent_id.
-- Inputs: lab_candidates (see lab_candidates.sql).
SELECT
    subject_id,
    itemid,
    label,
    fluid,
    value,
    valuenum,
    valueuom,
    charttime,
    storetime,
    date_diff('second', reference_time, charttime) / 3600.0 AS hours_from_reference
FROM lab_candidates
WHERE exclusion IS NULL
QUALIFY row_number() OVER (
    PARTITION BY subject_id, itemid
    ORDER BY abs(epoch_us(charttime) - epoch_us(reference_time)), charttime, labevent_id
) = 1
