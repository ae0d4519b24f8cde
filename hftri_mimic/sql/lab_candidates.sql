-- Lab rows that may give a patient's lab value (HFTri-MIMIC lab modality, docs/CURATION.md, Cohort and Dataset).
-- A candidate is a row of a configured item charted during the index admission (same hadm_id, charttime
-- within [admittime, dischtime]); with $storetime_before_reference and a record as reference, only rows
-- already stored at the reference time (storetime <= reference time), so the text never holds a result
-- the clinician could not have seen at the echo.
-- The configured items are numeric tests: a candidate is a result when valuenum is a number or value is a
-- number, possibly censored ('<0.01', '>1000'). Otherwise `exclusion` names why it is not:
--   missing_result  value empty or '___' (MIMIC-IV's missing / de-identified result);
--   not_a_number    text that is not a number and no valuenum (e.g. 'ERROR', 'HOLD').
-- Parameters: $lab_itemids (list), $storetime_before_reference (boolean).
-- Inputs: reference(subject_id, hadm_id, admittime, dischtime, reference_time, reference_is_record),
--         labevents, d_labitems.
SELECT
    r.subject_id,
    l.labevent_id,
    l.itemid,
    d.label,
    d.fluid,
    l.value,
    l.valuenum,
    l.valueuom,
    l.charttime,
    l.storetime,
    r.reference_time,
    CASE
        WHEN nullif(nullif(trim(coalesce(l.value, '')), '___'), '') IS NULL THEN 'missing_result'
        WHEN isfinite(l.valuenum) THEN NULL
        WHEN isfinite(TRY_CAST(regexp_replace(trim(l.value), '^(<=|>=|<|>)\s*', '') AS DOUBLE)) THEN NULL
        ELSE 'not_a_number'
    END AS exclusion
FROM reference AS r
JOIN labevents AS l
  ON l.hadm_id = r.hadm_id
 AND l.subject_id = r.subject_id
 AND l.charttime BETWEEN r.admittime AND r.dischtime
LEFT JOIN d_labitems AS d ON d.itemid = l.itemid
WHERE list_contains($lab_itemids, l.itemid)
  AND (NOT $storetime_before_reference OR NOT r.reference_is_record OR l.storetime <= r.reference_time)
