"""The demo's synthetic population: patients, their admissions and the latent truth behind them.

Everything is drawn vectorised with numpy for one chunk of patients at a time, so that the same code
writes a 240-patient demo or MIMIC-IV-sized tables in bounded memory.

Planted signal (docs/CURATION.md, Sources): each patient has three independent latent components, one per modality
(``c_lab``, ``c_ecg``, ``c_echo``, standard normal). Prevalent heart failure is a noisy threshold on
their sum, so each modality alone is partly informative and the three together are more so. Incident
heart failure after the index admission depends on the same components with other weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

DAY = np.timedelta64(86400, "s")
HOUR = np.timedelta64(3600, "s")

ANCHOR_YEAR_GROUPS = ("2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019", "2020 - 2022")
RACES = (
    ("WHITE", 0.62),
    ("BLACK/AFRICAN AMERICAN", 0.13),
    ("HISPANIC/LATINO - PUERTO RICAN", 0.03),
    ("HISPANIC OR LATINO", 0.02),
    ("ASIAN", 0.03),
    ("ASIAN - CHINESE", 0.02),
    ("WHITE - OTHER EUROPEAN", 0.03),
    ("WHITE - RUSSIAN", 0.02),
    ("BLACK/CAPE VERDEAN", 0.02),
    ("OTHER", 0.04),
    ("UNKNOWN", 0.03),
    ("UNABLE TO OBTAIN", 0.005),
    ("PATIENT DECLINED TO ANSWER", 0.005),
    ("PORTUGUESE", 0.01),
)
ADMISSION_TYPES = (
    ("EW EMER.", 0.38),
    ("URGENT", 0.14),
    ("OBSERVATION ADMIT", 0.14),
    ("EU OBSERVATION", 0.1),
    ("ELECTIVE", 0.06),
    ("SURGICAL SAME DAY ADMISSION", 0.07),
    ("DIRECT EMER.", 0.06),
    ("DIRECT OBSERVATION", 0.03),
    ("AMBULATORY OBSERVATION", 0.02),
)
ADMISSION_LOCATIONS = (
    ("EMERGENCY ROOM", 0.5),
    ("PHYSICIAN REFERRAL", 0.2),
    ("TRANSFER FROM HOSPITAL", 0.12),
    ("WALK-IN/SELF REFERRAL", 0.08),
    ("CLINIC REFERRAL", 0.06),
    ("PROCEDURE SITE", 0.04),
)
DISCHARGE_LOCATIONS = (
    ("HOME", 0.45),
    ("HOME HEALTH CARE", 0.25),
    ("SKILLED NURSING FACILITY", 0.15),
    ("REHAB", 0.05),
    ("CHRONIC/LONG TERM ACUTE CARE", 0.03),
    ("AGAINST ADVICE", 0.02),
    ("HOSPICE", 0.05),
)
INSURANCES = (("Medicare", 0.45), ("Medicaid", 0.2), ("Private", 0.3), ("Other", 0.05))
LANGUAGES = (("ENGLISH", 0.88), ("?", 0.06), ("SPANISH", 0.03), ("RUSSIAN", 0.02), ("PORTUGUESE", 0.01))
MARITAL = (("MARRIED", 0.42), ("SINGLE", 0.3), ("WIDOWED", 0.14), ("DIVORCED", 0.08), (None, 0.06))

# Admission roles in the synthetic history of a patient.
PRE, CARDIAC, EARLY_READMIT, POST = 0, 1, 2, 3


@dataclass(frozen=True)
class PopulationChunk:
    """One chunk of synthetic patients.

    patients:   one row per patient, the columns of MIMIC-IV ``patients`` plus latent truth columns
                (prefixed ``_``) that never reach the hosp tables.
    admissions: one row per admission, MIMIC-IV ``admissions`` columns plus ``_role`` and ``_hf``
                (this admission carries a heart-failure code).
    """

    patients: pl.DataFrame
    admissions: pl.DataFrame


def text(values) -> pl.Series:
    """A string column from an array that may hold None (object arrays do not cast to String)."""
    return pl.Series(np.asarray(values, dtype=object).tolist(), dtype=pl.String)


def pick(rng: np.random.Generator, table: tuple, n: int) -> np.ndarray:
    """Draw n values from a ((value, weight), ...) table."""
    values = np.array([v for v, _ in table], dtype=object)
    weights = np.array([w for _, w in table], dtype=float)
    return values[rng.choice(len(values), size=n, p=weights / weights.sum())]


def subject_ids(rng: np.random.Generator, n: int, first: int) -> np.ndarray:
    """Increasing 8-digit subject ids starting near ``first`` (MIMIC uses 10000000-19999999)."""
    gaps = rng.integers(1, 24, size=n)
    return first + np.cumsum(gaps)


def provider_ids(rng: np.random.Generator, n: int, null_rate: float = 0.0) -> np.ndarray:
    """MIMIC-style provider ids such as 'P41R5N'; some null."""
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    chars = alphabet[rng.integers(0, len(alphabet), size=(n, 5))]
    ids = np.char.add("P", np.array(["".join(row) for row in chars]))
    out = ids.astype(object)
    out[rng.random(n) < null_rate] = None
    return out


def draw_patients(rng: np.random.Generator, n: int, first_subject_id: int) -> pl.DataFrame:
    """Patients with demographics and the latent heart-failure components."""
    sid = subject_ids(rng, n, first_subject_id)
    gender = np.where(rng.random(n) < 0.52, "M", "F")
    age = np.clip(np.round(rng.normal(64, 15, n)), 18, 97).astype(int)
    # A few patients are anchored at 18-19 and seen before the anchor year: under 18 at admission.
    young = rng.random(n) < 0.025
    age[young] = rng.integers(18, 20, young.sum())
    anchor_age = np.where(age > 89, 91, age)  # MIMIC shows ages above 89 as 91
    anchor_year = rng.integers(2110, 2190, n)
    group = np.array(ANCHOR_YEAR_GROUPS)[rng.integers(0, len(ANCHOR_YEAR_GROUPS), n)]

    c_lab, c_ecg, c_echo = rng.normal(size=(3, n))
    age_effect = 0.02 * (age - 64)
    hf_score = c_lab + c_ecg + c_echo + age_effect + rng.normal(0, 0.5, n)
    prevalent = hf_score > 0.25  # about 45% prevalent, as in the paper (708 / 1524)
    incident_score = 0.6 * c_lab + 1.2 * c_ecg + 1.2 * c_echo + age_effect + rng.normal(0, 0.4, n)
    return pl.DataFrame(
        {
            "subject_id": sid,
            "gender": gender,
            "anchor_age": anchor_age,
            "anchor_year": anchor_year,
            "anchor_year_group": group,
            "_true_age": age,
            "_young": young,
            "_race": pick(rng, RACES, n),
            "_c_lab": c_lab,
            "_c_ecg": c_ecg,
            "_c_echo": c_echo,
            "_prevalent_hf": prevalent,
            "_incident_score": incident_score,
            "_icd_version": np.where(rng.random(n) < 0.5, 9, 10),
        }
    )


def _timestamps(years: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random minute within each given year, as datetime64[ms]."""
    starts = (years - 1970).astype("datetime64[Y]").astype("datetime64[ms]")
    offsets = rng.integers(0, 364 * 24 * 60, size=len(years)) * np.timedelta64(60, "s")
    return starts + offsets


def draw_admissions(rng: np.random.Generator, patients: pl.DataFrame, first_hadm_id: int) -> pl.DataFrame:
    """A history per patient: an optional earlier admission, the cardiac admission (where the demo puts
    the echo study and ECGs), an optional readmission within 30 days, and follow-up admissions whose
    timing encodes incident heart failure for non-prevalent patients."""
    n = patients.height
    young = patients["_young"].to_numpy()
    anchor_year = patients["anchor_year"].to_numpy()
    # Young-anchored patients are seen 1-2 years before their anchor year, so under 18 at admission.
    cardiac_year = np.where(young, anchor_year - rng.integers(1, 3, n), anchor_year + rng.integers(0, 3, n))
    cardiac_in = _timestamps(cardiac_year, rng)
    cardiac_los = np.maximum(np.round(rng.lognormal(1.4, 0.6, n) * 24), 6).astype(int) * HOUR
    cardiac_out = cardiac_in + cardiac_los

    prevalent = patients["_prevalent_hf"].to_numpy()
    rows: list[dict[str, np.ndarray]] = []

    def add(mask: np.ndarray, admit: np.ndarray, los_hours: np.ndarray, role: int, hf: np.ndarray) -> None:
        idx = np.flatnonzero(mask)
        rows.append(
            {
                "_pidx": idx,
                "admittime": admit[idx],
                "dischtime": admit[idx] + los_hours[idx] * HOUR,
                "_role": np.full(len(idx), role),
                "_hf": hf[idx],
            }
        )

    def los(k: int) -> np.ndarray:
        return np.maximum(np.round(rng.lognormal(1.2, 0.7, k) * 24), 4).astype(int)

    # Earlier admission (20%); for a third of prevalent patients the HF code sits only there.
    has_pre = rng.random(n) < 0.22
    hf_only_before = prevalent & has_pre & (rng.random(n) < 0.35)
    pre_in = cardiac_in - rng.integers(60, 1500, n) * DAY
    add(has_pre, pre_in, los(n), PRE, hf_only_before | (prevalent & has_pre & (rng.random(n) < 0.3)))
    add(
        np.ones(n, bool),
        cardiac_in,
        cardiac_los.astype("timedelta64[h]").astype(int),
        CARDIAC,
        prevalent & ~hf_only_before,
    )

    # Readmission within 30 days of discharge (10%): excluded from follow-up by followup_min_days.
    early = rng.random(n) < 0.1
    early_in = cardiac_out + rng.integers(2, 27, n) * DAY
    add(early, early_in, los(n), EARLY_READMIT, (~prevalent) & (rng.random(n) < 0.4))

    # Follow-up: about 56% of non-prevalent patients come back >= 30 days later (455 / 816 in the paper).
    back = rng.random(n) < 0.56
    score = patients["_incident_score"].to_numpy()
    event_days = 35 + rng.exponential(500 * np.exp(-1.5 * score))
    censor_days = rng.uniform(45, 1600, n)
    event = back & ~prevalent & (event_days < censor_days)
    last_days = np.where(event, event_days, censor_days)
    n_before = rng.poisson(0.8, n)
    for k in range(int(n_before.max(initial=0))):
        keep = back & (n_before > k)
        frac = rng.uniform(0.1, 0.9, n)
        add(
            keep & (last_days * frac > 32),
            cardiac_out + np.round(last_days * frac).astype(int) * DAY,
            los(n),
            POST,
            np.zeros(n, bool),
        )
    add(back, cardiac_out + np.round(last_days).astype(int) * DAY, los(n), POST, event)

    adm = pl.concat([pl.DataFrame(r) for r in rows])
    pidx = adm["_pidx"].to_numpy()
    adm = adm.with_columns(
        subject_id=pl.Series(patients["subject_id"].to_numpy()[pidx]),
    ).sort(["subject_id", "admittime"])
    m = adm.height
    hadm_ids = first_hadm_id + rng.permutation(m) * 7 + rng.integers(0, 7, m)
    admittime = adm["admittime"].to_numpy()
    dischtime = adm["dischtime"].to_numpy()
    is_emergency = rng.random(m) < 0.6
    edreg = np.where(is_emergency, admittime - rng.integers(60, 600, m) * np.timedelta64(60, "s"), np.datetime64("NaT"))
    edout = np.where(is_emergency, admittime + rng.integers(10, 120, m) * np.timedelta64(60, "s"), np.datetime64("NaT"))
    sid = adm["subject_id"].to_numpy()
    is_last = np.r_[sid[1:] != sid[:-1], True]
    expire = (rng.random(m) < 0.03) & is_last & (adm["_role"].to_numpy() != CARDIAC)
    race = patients["_race"].to_numpy()[adm["_pidx"].to_numpy()]
    return adm.with_columns(
        hadm_id=pl.Series(hadm_ids),
        deathtime=pl.Series(np.where(expire, dischtime, np.datetime64("NaT")).astype("datetime64[ms]")),
        admission_type=text(pick(rng, ADMISSION_TYPES, m)),
        admit_provider_id=text(provider_ids(rng, m, null_rate=0.02)),
        admission_location=text(pick(rng, ADMISSION_LOCATIONS, m)),
        discharge_location=text(np.where(expire, "DIED", pick(rng, DISCHARGE_LOCATIONS, m)).astype(object)),
        insurance=text(pick(rng, INSURANCES, m)),
        language=text(pick(rng, LANGUAGES, m)),
        marital_status=text(pick(rng, MARITAL, m)),
        race=text(race),
        edregtime=pl.Series(edreg.astype("datetime64[ms]")),
        edouttime=pl.Series(edout.astype("datetime64[ms]")),
        hospital_expire_flag=pl.Series(expire.astype(int)),
    )


def draw_population(rng: np.random.Generator, n: int, first_subject_id: int, first_hadm_id: int) -> PopulationChunk:
    patients = draw_patients(rng, n, first_subject_id)
    admissions = draw_admissions(rng, patients, first_hadm_id)
    # Date of death: some patients die after their last admission (censor_at_death matters for them).
    last_out = admissions.group_by("subject_id").agg(pl.col("dischtime").max().alias("_last_out"))
    patients = patients.join(last_out, on="subject_id", how="left", maintain_order="left")
    dies = rng.random(n) < 0.18
    dod = patients["_last_out"].to_numpy() + rng.integers(1, 900, n) * DAY
    in_hospital = admissions.filter(pl.col("hospital_expire_flag") == 1).select("subject_id", "deathtime")
    patients = patients.with_columns(
        dod=pl.Series(np.where(dies, dod, np.datetime64("NaT")).astype("datetime64[D]")),
    ).join(
        in_hospital.group_by("subject_id").agg(pl.col("deathtime").max()),
        on="subject_id",
        how="left",
        maintain_order="left",
    )
    patients = patients.with_columns(dod=pl.coalesce(pl.col("deathtime").dt.date(), pl.col("dod"))).drop(
        "deathtime", "_last_out"
    )
    return PopulationChunk(patients=patients, admissions=admissions)
