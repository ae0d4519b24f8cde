-- Lab values of the index admission (HFTri-MIMIC lab modality, SPEC §4.2 rule 6 and §4.6).
-- For each cohort patient and each configured item, the value charted during the index admission
-- (same hadm_id, charttime within [admittime, dischtime]) closest in time to the reference time
-- (the chosen echo study; without one the chosen ECG; without either the admittime). With
-- $storetime_before_reference and a record as reference, only values already stored (storetime <=
-- reference time) count, so the text never holds a result the clinician could not have seen at the
-- echo. Ties: the earlier charttime, then the smaller labevent_id. Rows whose value is missing ('___'
-- or empty) never count.
-- Parameters: $lab_itemids (list), $storetime_before_reference (boolean).
-- Inputs: reference(subject_id, hadm_id, admittime, dischtime, reference_time, reference_is_record),
--         labevents, d_labitems.
SELECT
    r.subject_id,
    l.itemid,
    d.label,
    d.fluid,
    l.value,
    l.valuenum,
    l.valueuom,
    l.charttime,
    l.storetime,
    date_diff('second', r.reference_time, l.charttime) / 3600.0 AS hours_from_reference
FROM reference AS r
JOIN labevents AS l
  ON l.hadm_id = r.hadm_id
 AND l.subject_id = r.subject_id
 AND l.charttime BETWEEN r.admittime AND r.dischtime
LEFT JOIN d_labitems AS d ON d.itemid = l.itemid
WHERE list_contains($lab_itemids, l.itemid)
  AND nullif(trim(coalesce(l.value, '')), '___') IS NOT NULL
  AND nullif(trim(coalesce(l.value, '')), '') IS NOT NULL
  AND (NOT $storetime_before_reference OR NOT r.reference_is_record OR l.storetime <= r.reference_time)
QUALIFY row_number() OVER (
    PARTITION BY r.subject_id, l.itemid
    ORDER BY abs(epoch_us(l.charttime) - epoch_us(r.reference_time)), l.charttime, l.labevent_id
) = 1
