-- Height, weight and BMI from the outpatient measurement table `omr` (docs/CURATION.md, Dataset).
-- For each cohort patient the latest measurement charted on or before the index admission date.
-- MIMIC-IV stores them as text: 'Height (Inches)', 'Weight (Lbs)', 'BMI (kg/m2)' (the variants
-- without units, 'Height', 'Weight', 'BMI', use the same units). Values are converted with TRY_CAST,
-- so text that is not a number (e.g. '>300') is left out instead of failing; heights in inches are
-- converted to cm (x 2.54), weights in pounds to kg (x 0.45359237). Implausible values (height outside
-- 100-250 cm, weight outside 20-350 kg, BMI outside 10-100) are left out.
-- Inputs: reference(subject_id, admittime), omr.
WITH measures AS (
    SELECT
        o.subject_id,
        o.chartdate,
        o.seq_num,
        CASE
            WHEN o.result_name IN ('Height (Inches)', 'Height') THEN 'height_cm'
            WHEN o.result_name IN ('Weight (Lbs)', 'Weight') THEN 'weight_kg'
            WHEN o.result_name IN ('BMI (kg/m2)', 'BMI') THEN 'bmi'
        END AS measure,
        CASE
            WHEN o.result_name IN ('Height (Inches)', 'Height') THEN TRY_CAST(trim(o.result_value) AS DOUBLE) * 2.54
            WHEN o.result_name IN ('Weight (Lbs)', 'Weight') THEN TRY_CAST(trim(o.result_value) AS DOUBLE) * 0.45359237
            ELSE TRY_CAST(trim(o.result_value) AS DOUBLE)
        END AS value
    FROM omr AS o
    JOIN reference AS r USING (subject_id)
    WHERE o.chartdate <= CAST(r.admittime AS DATE)
),
plausible AS (
    SELECT * FROM measures
    WHERE (measure = 'height_cm' AND value BETWEEN 100 AND 250)
       OR (measure = 'weight_kg' AND value BETWEEN 20 AND 350)
       OR (measure = 'bmi' AND value BETWEEN 10 AND 100)
)
SELECT subject_id, measure, value, chartdate
FROM plausible
QUALIFY row_number() OVER (PARTITION BY subject_id, measure ORDER BY chartdate DESC, seq_num DESC, value) = 1
