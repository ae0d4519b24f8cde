"""MIMIC-IV ``hosp`` tables for the demo population, with the real columns, order and value formats.

Each builder takes one population chunk and returns a polars frame whose columns are exactly those of
the MIMIC-IV v3.1 csv.gz file (checked against the open MIMIC-IV demo by the tests).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from hftri_mimic.demo.population import CARDIAC, DAY, PRE, PopulationChunk, pick, provider_ids, text
from hftri_mimic.demo.vocab import (
    CBC_PANEL,
    CHARLSON_ONLY_CODES,
    CHEM_PANEL,
    DRUGS,
    EXTRA_D_LABITEMS,
    FILLER,
    HF_CODES,
    HISTORY,
    LAB_ITEMS,
    LOG_NORMAL_ITEMS,
    OTHER_ITEMS,
)

MINUTE = np.timedelta64(60, "s")

COLUMNS = {
    "patients": ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"],
    "admissions": [
        "subject_id",
        "hadm_id",
        "admittime",
        "dischtime",
        "deathtime",
        "admission_type",
        "admit_provider_id",
        "admission_location",
        "discharge_location",
        "insurance",
        "language",
        "marital_status",
        "race",
        "edregtime",
        "edouttime",
        "hospital_expire_flag",
    ],
    "diagnoses_icd": ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"],
    "d_icd_diagnoses": ["icd_code", "icd_version", "long_title"],
    "labevents": [
        "labevent_id",
        "subject_id",
        "hadm_id",
        "specimen_id",
        "itemid",
        "order_provider_id",
        "charttime",
        "storetime",
        "value",
        "valuenum",
        "valueuom",
        "ref_range_lower",
        "ref_range_upper",
        "flag",
        "priority",
        "comments",
    ],
    "d_labitems": ["itemid", "label", "fluid", "category"],
    "omr": ["subject_id", "chartdate", "seq_num", "result_name", "result_value"],
    "prescriptions": [
        "subject_id",
        "hadm_id",
        "pharmacy_id",
        "poe_id",
        "poe_seq",
        "order_provider_id",
        "starttime",
        "stoptime",
        "drug_type",
        "drug",
        "formulary_drug_cd",
        "gsn",
        "ndc",
        "prod_strength",
        "form_rx",
        "dose_val_rx",
        "dose_unit_rx",
        "form_val_disp",
        "form_unit_disp",
        "doses_per_24_hrs",
        "route",
    ],
}


def patients_table(pop: PopulationChunk) -> pl.DataFrame:
    return pop.patients.select(COLUMNS["patients"])


def admissions_table(pop: PopulationChunk) -> pl.DataFrame:
    return pop.admissions.select(COLUMNS["admissions"])


def _patient_values(pop: PopulationChunk, column: str) -> np.ndarray:
    """A patient-level column aligned to the admissions rows."""
    return pop.patients[column].to_numpy()[pop.admissions["_pidx"].to_numpy()]


def history_flags(rng: np.random.Generator, pop: PopulationChunk) -> np.ndarray:
    """Chronic conditions per patient, (n_patients, len(HISTORY)) bool; more frequent with heart failure and with
    the patient's lab component ``c_lab`` (the cardio-renal-metabolic state behind both the lab values and these
    comorbidities), so that the history also carries risk of future heart failure."""
    n = pop.patients.height
    prevalent = pop.patients["_prevalent_hf"].to_numpy()
    c_lab = pop.patients["_c_lab"].to_numpy()
    rates = np.array([base for *_, base, _ in HISTORY])
    hf_weights = np.array([w for *_, w in HISTORY])
    latent_rates = np.clip(rates[None, :] * np.exp(0.5 * c_lab)[:, None], 0.01, 0.9)
    return rng.random((n, len(HISTORY))) < latent_rates + np.outer(prevalent, hf_weights)


def diagnoses_table(rng: np.random.Generator, pop: PopulationChunk, history: np.ndarray) -> pl.DataFrame:
    adm = pop.admissions
    m = adm.height
    version = _patient_values(pop, "_icd_version")
    pidx = adm["_pidx"].to_numpy()
    codes: list[np.ndarray] = []
    hadm: list[np.ndarray] = []
    vers: list[np.ndarray] = []

    def emit(mask: np.ndarray, code9: np.ndarray | str, code10: np.ndarray | str) -> None:
        idx = np.flatnonzero(mask)
        c9 = np.broadcast_to(np.asarray(code9, dtype=object), (m,))[idx]
        c10 = np.broadcast_to(np.asarray(code10, dtype=object), (m,))[idx]
        codes.append(np.where(version[idx] == 9, c9, c10))
        hadm.append(idx)
        vers.append(version[idx])

    # Heart-failure code where the population says so; a few admissions code it twice (other HF codes).
    hf = adm["_hf"].to_numpy()
    for _ in range(2):
        k9 = rng.integers(0, len(HF_CODES[9]), m)
        k10 = rng.integers(0, len(HF_CODES[10]), m)
        emit(
            hf,
            np.array([c for c, _ in HF_CODES[9]], dtype=object)[k9],
            np.array([c for c, _ in HF_CODES[10]], dtype=object)[k10],
        )
        hf = hf & (rng.random(m) < 0.25)
    # Codes only Charlson's list counts as HF (cardiomyopathy...), on some non-HF admissions.
    charlson = (~adm["_hf"].to_numpy()) & (rng.random(m) < 0.04)
    emit(
        charlson,
        np.array([c for c, _ in CHARLSON_ONLY_CODES[9]], dtype=object)[rng.integers(0, 2, m)],
        np.array([c for c, _ in CHARLSON_ONLY_CODES[10]], dtype=object)[rng.integers(0, 2, m)],
    )
    # Chronic conditions are coded on most admissions of patients who have them.
    for g, (_, (c9, _), (c10, _), _, _) in enumerate(HISTORY):
        emit(history[pidx, g] & (rng.random(m) < 0.8), c9, c10)
    # Other diagnoses.
    n_filler = 2 + rng.poisson(7.5, m)
    for k in range(int(n_filler.max(initial=0))):
        i9 = rng.integers(0, len(FILLER[9]), m)
        i10 = rng.integers(0, len(FILLER[10]), m)
        emit(
            n_filler > k,
            np.array([c for c, _ in FILLER[9]], dtype=object)[i9],
            np.array([c for c, _ in FILLER[10]], dtype=object)[i10],
        )

    rows = np.concatenate(hadm)
    frame = pl.DataFrame(
        {
            "_row": rows,
            "icd_code": text(np.concatenate(codes)),
            "icd_version": np.concatenate(vers),
            "_order": rng.random(len(rows)),
        }
    ).unique(["_row", "icd_code"], keep="first", maintain_order=True)
    frame = frame.sort(["_row", "_order"])
    rows = frame["_row"].to_numpy()
    frame = frame.with_columns(
        seq_num=pl.int_range(1, pl.len() + 1).over("_row"),
        subject_id=pl.Series(adm["subject_id"].to_numpy()[rows]),
        hadm_id=pl.Series(adm["hadm_id"].to_numpy()[rows]),
    )
    return frame.select(COLUMNS["diagnoses_icd"])


def d_icd_diagnoses_table() -> pl.DataFrame:
    entries: dict[tuple[str, int], str] = {}
    for version in (9, 10):
        for code, title in HF_CODES[version] + CHARLSON_ONLY_CODES[version] + FILLER[version]:
            entries[(code, version)] = title
    for _, (c9, t9), (c10, t10), _, _ in HISTORY:
        entries[(c9, 9)] = t9
        entries[(c10, 10)] = t10
    # A few real entries never used, with a leading zero (why icd_code must stay text).
    entries[("0090", 9)] = "Infectious colitis, enteritis, and gastroenteritis"
    entries[("01160", 9)] = "Tuberculous pneumonia [any form], unspecified"
    entries[("A000", 10)] = "Cholera due to Vibrio cholerae 01, biovar cholerae"
    keys = sorted(entries, key=lambda k: (k[1], k[0]))
    return pl.DataFrame(
        {
            "icd_code": [k[0] for k in keys],
            "icd_version": [k[1] for k in keys],
            "long_title": [entries[k] for k in keys],
        }
    )


def d_labitems_table() -> pl.DataFrame:
    rows = {itemid: (label, fluid, cat) for itemid, (label, fluid, cat, *_) in {**LAB_ITEMS, **OTHER_ITEMS}.items()}
    for itemid, label, fluid, cat in EXTRA_D_LABITEMS:
        rows.setdefault(itemid, (label, fluid, cat))
    ids = sorted(rows)
    return pl.DataFrame(
        {
            "itemid": ids,
            "label": [rows[i][0] for i in ids],
            "fluid": [rows[i][1] for i in ids],
            "category": [rows[i][2] for i in ids],
        }
    )


def _format_values(values: np.ndarray, decimals: np.ndarray) -> np.ndarray:
    """Numbers as MIMIC writes them in labevents.value: fixed decimals per item."""
    out = np.empty(len(values), dtype=object)
    for d in np.unique(decimals):
        sel = decimals == d
        out[sel] = np.char.mod(f"%.{int(d)}f", values[sel])
    return out


def labevents_table(rng: np.random.Generator, pop: PopulationChunk, first_labevent_id: int) -> pl.DataFrame:
    """Lab draws during admissions (panels) and outpatient draws with a null hadm_id.

    The patient's lab component ``c_lab`` shifts items by their weight in LAB_ITEMS (planted signal);
    each draw adds its own noise, so one value is only a partial view of the component.
    """
    adm = pop.admissions
    m = adm.height
    role = adm["_role"].to_numpy()
    los_days = (adm["dischtime"].to_numpy() - adm["admittime"].to_numpy()) / DAY
    n_draws = 1 + rng.poisson(np.clip(los_days, 0.2, 30) * 1.8)
    draw_adm = np.repeat(np.arange(m), n_draws)
    draw_time = adm["admittime"].to_numpy()[draw_adm] + (rng.random(len(draw_adm)) * los_days[draw_adm] * 86400).astype(
        "timedelta64[s]"
    )
    draw_hadm = adm["hadm_id"].to_numpy()[draw_adm].astype(float)
    draw_pidx = adm["_pidx"].to_numpy()[draw_adm]

    # Outpatient draws (no hadm_id), a month to a year away from the cardiac admission.
    cardiac = adm.filter(pl.col("_role") == CARDIAC)
    n_out = rng.poisson(1.2, cardiac.height)
    out_src = np.repeat(np.arange(cardiac.height), n_out)
    out_time = cardiac["admittime"].to_numpy()[out_src] - rng.integers(30, 365, len(out_src)) * DAY
    # Lab times are on the minute in MIMIC-IV.
    draw_time = np.concatenate([draw_time, out_time]).astype("datetime64[m]").astype("datetime64[ms]")
    draw_hadm = np.concatenate([draw_hadm, np.full(len(out_src), np.nan)])
    draw_pidx = np.concatenate([draw_pidx, cardiac["_pidx"].to_numpy()[out_src]])
    draw_role = np.concatenate([role[draw_adm], np.full(len(out_src), -1)])
    draw_no_items = np.concatenate([rng.random(m)[draw_adm] < 0.06, np.zeros(len(out_src), bool)])
    n = len(draw_time)

    items = np.array(list(LAB_ITEMS) + list(OTHER_ITEMS))
    specs = {**LAB_ITEMS, **OTHER_ITEMS}
    chem = rng.random(n) < 0.9
    cbc = rng.random(n) < 0.85
    is_cardiac = draw_role == CARDIAC
    include = np.zeros((n, len(items)), bool)
    for j, itemid in enumerate(items):
        if itemid in CHEM_PANEL:
            include[:, j] = chem & (rng.random(n) < 0.97)
        elif itemid in CBC_PANEL:
            include[:, j] = cbc & (rng.random(n) < 0.98)
        elif itemid == 50963:
            include[:, j] = rng.random(n) < np.where(is_cardiac, 0.3, 0.03)
        elif itemid == 51003:
            include[:, j] = rng.random(n) < np.where(is_cardiac, 0.25, 0.03)
        else:
            include[:, j] = rng.random(n) < 0.5
    # Some admissions have labs, but none of the configured items (the cohort's lab criterion).
    configured = np.isin(items, list(LAB_ITEMS))
    include[np.ix_(draw_no_items, configured)] = False
    draw_idx, item_idx = np.nonzero(include)
    k = len(draw_idx)

    itemid = items[item_idx]
    spec = np.array([specs[i][3:10] for i in items], dtype=object)[item_idx]
    mean, sd = spec[:, 1].astype(float), spec[:, 2].astype(float)
    weight = spec[:, 6].astype(float)
    c_lab = pop.patients["_c_lab"].to_numpy()[draw_pidx[draw_idx]]
    z = weight * c_lab + np.sqrt(1 - weight**2) * rng.normal(size=k)
    value = mean + sd * z
    log_normal = np.isin(itemid, list(LOG_NORMAL_ITEMS))
    value[log_normal] = np.exp(value[log_normal])
    value = np.maximum(value, 0.0)
    decimals = spec[:, 5].astype(int)
    value = np.round(value * 10.0**decimals) / 10.0**decimals
    value_text = _format_values(value, decimals)
    valuenum = value.copy()
    below = (itemid == 51003) & (value < 0.01)
    value_text[below] = "<0.01"
    valuenum[below] = np.nan
    missing = rng.random(k) < 0.003
    value_text[missing] = "___"
    valuenum[missing] = np.nan
    lower, upper = spec[:, 3].astype(float), spec[:, 4].astype(float)
    flag = np.where((valuenum < lower) | (valuenum > upper), "abnormal", None).astype(object)

    charttime = draw_time[draw_idx]
    store_delay = rng.integers(15, 300, k) * MINUTE
    storetime = (charttime + store_delay).astype("datetime64[ms]")
    storetime[rng.random(k) < 0.01] = np.datetime64("NaT")
    specimen_ids = (rng.permutation(n) * 13 + rng.integers(1, 13, n))[draw_idx]
    comments = np.where(rng.random(k) < 0.01, "___", None).astype(object)
    frame = pl.DataFrame(
        {
            "subject_id": pop.patients["subject_id"].to_numpy()[draw_pidx[draw_idx]],
            "hadm_id": pl.Series(draw_hadm[draw_idx], nan_to_null=True).cast(pl.Int64),
            "specimen_id": specimen_ids,
            "itemid": itemid,
            "order_provider_id": text(provider_ids(rng, k, null_rate=0.8)),
            "charttime": charttime,
            "storetime": storetime,
            "value": text(value_text),
            # valuenum as MIMIC prints it: the same digits as value ("138", not "138.0").
            "valuenum": text(np.where(np.isnan(valuenum), None, value_text)),
            "valueuom": text(spec[:, 0]),
            "ref_range_lower": lower,
            "ref_range_upper": upper,
            "flag": text(flag),
            "priority": text(pick(rng, (("ROUTINE", 0.6), ("STAT", 0.35), (None, 0.05)), k)),
            "comments": text(comments),
        }
    )
    return numbered_in_file_order(frame, first_labevent_id).select(COLUMNS["labevents"])


def numbered_in_file_order(labevents: pl.DataFrame, first_labevent_id: int) -> pl.DataFrame:
    """``labevents`` with labevent_id counting up from ``first_labevent_id`` by subject_id, charttime and itemid, as
    MIMIC-IV numbers them (replacing any ids it had), and its rows in the file's order (:func:`file_order`)."""
    numbered = labevents.sort(["subject_id", "charttime", "itemid"]).with_columns(
        labevent_id=pl.int_range(first_labevent_id, first_labevent_id + pl.len(), dtype=pl.Int64)
    )
    return file_order(numbered)


def file_order(labevents: pl.DataFrame) -> pl.DataFrame:
    """The rows in the order of MIMIC-IV's labevents.csv.gz, which is not labevent_id's: labevent_id counts up by
    subject_id, then charttime, but the file runs roughly by the time of day of charttime (00:00 rows first),
    interleaving subjects, with a specimen's rows together and its items in no order (checked on the MIMIC-IV demo
    2.2: 99% of consecutive rows keep or raise the time of day, 5,662 runs of one subject for 100 subjects, items in
    id order in 0.3% of specimens). A reader must not rely on the order; this demo makes one that does fail.

    The scramble is a fixed integer mix of specimen_id and labevent_id (Knuth's multiplicative hash), not a draw from
    the generator's random stream, so every other table of the demo is unchanged by it."""
    mix = 2654435761  # Knuth's multiplicative-hash constant (2^32 / golden ratio)
    return labevents.sort(
        pl.col("charttime").dt.hour().cast(pl.Int32) * 60 + pl.col("charttime").dt.minute().cast(pl.Int32),
        (pl.col("specimen_id") * mix) % 2**32,
        (pl.col("labevent_id") * mix) % 2**32,
    )


def omr_table(rng: np.random.Generator, pop: PopulationChunk) -> pl.DataFrame:
    """Outpatient measurements: blood pressure, weight (lbs), height (inches) and BMI, as text."""
    n = pop.patients.height
    cardiac = pop.admissions.filter(pl.col("_role") == CARDIAC)
    visits = 1 + rng.poisson(5, n)
    pidx = np.repeat(np.arange(n), visits)
    v = len(pidx)
    ref = cardiac["admittime"].to_numpy()[np.argsort(cardiac["_pidx"].to_numpy())][pidx]
    dates = (ref - rng.integers(-700, 1200, v) * DAY).astype("datetime64[D]")
    male = pop.patients["gender"].to_numpy() == "M"
    height_in = np.round((np.where(male, 69.5, 64.0) + rng.normal(0, 2.8, n))[pidx], 1)
    weight_lb = np.round((np.where(male, 190, 160) + rng.normal(0, 35, n))[pidx] + rng.normal(0, 4, v), 1)
    bmi = np.round(703.0 * weight_lb / height_in**2, 1)
    systolic = np.round(125 + rng.normal(0, 15, v)).astype(int)
    diastolic = np.round(75 + rng.normal(0, 9, v)).astype(int)

    def as_text(x: np.ndarray) -> np.ndarray:
        # MIMIC writes whole numbers without decimals ("63", "127") and others with one ("63.5").
        whole = np.isclose(x, np.round(x))
        return np.where(whole, np.char.mod("%d", np.round(x).astype(int)), np.char.mod("%.1f", x))

    parts = [
        (
            "Blood Pressure",
            np.char.add(np.char.add(systolic.astype(str), "/"), diastolic.astype(str)),
            rng.random(v) < 0.9,
        ),
        ("Weight (Lbs)", as_text(weight_lb), rng.random(v) < 0.85),
        ("Height (Inches)", as_text(height_in), rng.random(v) < 0.35),
        ("BMI (kg/m2)", as_text(bmi), rng.random(v) < 0.7),
    ]
    frames = []
    for name, values, keep in parts:
        frames.append(
            pl.DataFrame(
                {
                    "_pidx": pidx[keep],
                    "chartdate": dates[keep],
                    "result_name": name,
                    "result_value": values[keep].astype(str),
                }
            )
        )
    frame = pl.concat(frames)
    frame = frame.with_columns(
        subject_id=pl.Series(pop.patients["subject_id"].to_numpy()[frame["_pidx"].to_numpy()]),
    )
    frame = frame.with_columns(
        seq_num=pl.int_range(1, pl.len() + 1).over(["subject_id", "chartdate", "result_name"])
    ).sort(["subject_id", "chartdate", "result_name"])
    return frame.select(COLUMNS["omr"])


def prescriptions_table(rng: np.random.Generator, pop: PopulationChunk, first_pharmacy_id: int) -> pl.DataFrame:
    """Drug orders per admission; heart-failure patients, and to a lesser degree patients with a high ``c_lab``
    (treated hypertension, renal disease), get cardiac drugs more often (drug history)."""
    adm = pop.admissions
    m = adm.height
    prevalent = _patient_values(pop, "_prevalent_hf") + 0.4 * np.clip(_patient_values(pop, "_c_lab"), 0, 2)
    names = np.array([d[0] for d in DRUGS], dtype=object)
    weight = np.array([d[10] for d in DRUGS])
    base = np.where(np.array([d[9] for d in DRUGS]) == "other", 0.55, 0.12)
    prob = base[None, :] + np.outer(prevalent, weight)
    orders = np.where(rng.random((m, len(DRUGS))) < prob, 1 + rng.poisson(1.3, (m, len(DRUGS))), 0)
    adm_idx, drug_idx = np.nonzero(orders)
    reps = orders[adm_idx, drug_idx]
    adm_idx = np.repeat(adm_idx, reps)
    drug_idx = np.repeat(drug_idx, reps)
    k = len(adm_idx)
    admit = adm["admittime"].to_numpy()[adm_idx]
    los_s = ((adm["dischtime"].to_numpy() - adm["admittime"].to_numpy()) / np.timedelta64(1, "s"))[adm_idx]
    start = admit + (rng.random(k) * los_s).astype("timedelta64[s]")
    start = start.astype("datetime64[m]").astype("datetime64[ms]")  # orders start on the minute
    stop = start + rng.integers(1, 96, k) * np.timedelta64(3600, "s")
    stop[rng.random(k) < 0.05] = np.datetime64("NaT")
    subject = adm["subject_id"].to_numpy()[adm_idx]
    drug = np.array(DRUGS, dtype=object)[drug_idx]
    poe_seq = rng.integers(1, 2000, k)
    has_poe = rng.random(k) < 0.85
    poe_id = np.where(has_poe, np.char.add(np.char.add(subject.astype(str), "-"), poe_seq.astype(str)), None)
    doses = rng.integers(1, 5, k).astype(float)
    doses[rng.random(k) < 0.2] = np.nan
    frame = pl.DataFrame(
        {
            "subject_id": subject,
            "hadm_id": adm["hadm_id"].to_numpy()[adm_idx],
            "poe_id": text(poe_id.astype(object)),
            "poe_seq": pl.Series(np.where(has_poe, poe_seq, np.nan), nan_to_null=True).cast(pl.Int64),
            "order_provider_id": text(provider_ids(rng, k, null_rate=0.3)),
            "starttime": start,
            "stoptime": stop,
            "drug_type": text(pick(rng, (("MAIN", 0.9), ("BASE", 0.07), ("ADDITIVE", 0.03)), k)),
            "drug": text(names[drug_idx]),
            "formulary_drug_cd": text(drug[:, 1]),
            "gsn": text(np.where(drug[:, 2] == "", None, drug[:, 2])),
            "ndc": text(drug[:, 3]),
            "prod_strength": text(drug[:, 4]),
            "form_rx": text(np.full(k, None, dtype=object)),
            "dose_val_rx": text(drug[:, 5]),
            "dose_unit_rx": text(drug[:, 6]),
            "form_val_disp": text(
                pick(rng, (("1", 0.7), ("2", 0.15), ("0.5", 0.08), ("0.0083", 0.04), ("1-2", 0.03)), k)
            ),
            "form_unit_disp": text(drug[:, 7]),
            "doses_per_24_hrs": pl.Series(doses, nan_to_null=True).cast(pl.Int64),
            "route": text(drug[:, 8]),
        }
    ).sort(["subject_id", "starttime"])
    return frame.with_columns(pharmacy_id=pl.int_range(first_pharmacy_id, first_pharmacy_id + pl.len()) * 3 + 1).select(
        COLUMNS["prescriptions"]
    )


__all__ = [
    "COLUMNS",
    "PRE",
    "admissions_table",
    "d_icd_diagnoses_table",
    "d_labitems_table",
    "diagnoses_table",
    "history_flags",
    "labevents_table",
    "omr_table",
    "patients_table",
    "prescriptions_table",
]
