"""Paired significance tests for comparing two models on the same patients (Tables 5-6, models/evaluation/compare.py).

- :func:`delong_test`: two correlated AUCs on the same test patients (DeLong, DeLong & Clarke-Pearson 1988,
  Biometrics 44:837), with the midrank algorithm of Sun & Xu (2014, IEEE Signal Process. Lett. 21:1389).
- :func:`mcnemar_test`: two accuracies on the same test patients (McNemar 1947), exact: a binomial test on the
  patients the two models classify differently (``scipy.stats.binomtest``).
- :func:`corrected_resampled_t_test`: a score compared over the folds of a (repeated) cross-validation (Nadeau &
  Bengio 2003, Machine Learning 52:239; for r x k-fold, Bouckaert & Frank 2004). Folds share training patients,
  so their differences are correlated; the test inflates the variance of the mean difference by n_test / n_train
  (the correlation Nadeau and Bengio derive) instead of dividing by the number of folds alone.

DeLong's test is written here because no maintained package provides it (scikit-learn, scipy and statsmodels have
none; the PyPI packages that do are single-author snippets). It is short, and ``tests/test_significance.py``
checks it against a direct computation from its definition and by simulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest, norm, rankdata
from scipy.stats import t as student_t


@dataclass(frozen=True)
class PairedTest:
    """One paired comparison: ``difference`` = second model - first model, its ``low``/``high`` interval where the
    test gives one (NaN otherwise), the two-sided ``p_value``, and the test's ``name``."""

    name: str
    difference: float
    p_value: float
    low: float = math.nan
    high: float = math.nan
    statistic: float = math.nan


def _structural_components(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUC of each model and DeLong's structural components from midranks (Sun & Xu 2014).

    scores: (k models, n patients); labels: (n,) of 0/1. Returns aucs (k,), v10 (k, m positives), v01 (k, n
    negatives), where v10[i] = P(score of positive i > a random negative's) and v01[j] likewise for negative j
    (ties count one half)."""
    positive = labels == 1
    pos, neg = scores[:, positive], scores[:, ~positive]
    m, n = pos.shape[1], neg.shape[1]
    rank_pos = rankdata(pos, axis=1)
    rank_neg = rankdata(neg, axis=1)
    rank_all = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    v10 = (rank_all[:, :m] - rank_pos) / n
    v01 = 1.0 - (rank_all[:, m:] - rank_neg) / m
    aucs = (rank_all[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    return aucs, v10, v01


def delong_covariance(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (k,) and their DeLong covariance matrix (k, k) for ``scores`` (k, n) of k models on the same patients."""
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    labels = np.asarray(labels).astype(int)
    if labels.ndim != 1 or scores.shape[1] != labels.size:
        raise ValueError("scores must be (models, patients) and labels (patients,)")
    m, n = int(labels.sum()), int((1 - labels).sum())
    if m < 2 or n < 2:
        raise ValueError(f"DeLong's variance needs at least two patients of each class (got {m} and {n})")
    aucs, v10, v01 = _structural_components(scores, labels)
    covariance = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, covariance


def delong_test(labels: np.ndarray, first: np.ndarray, second: np.ndarray, *, alpha: float = 0.05) -> PairedTest:
    """DeLong's test of AUC(second) - AUC(first) on the same patients, with its normal (1 - alpha) interval.

    Identical scores give difference 0 and p = 1 (zero variance); a nonzero difference with zero variance (every
    patient ranked the same way relative to the others by both models) gives p = 0."""
    aucs, cov = delong_covariance(np.vstack([first, second]), labels)
    difference = float(aucs[1] - aucs[0])
    variance = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if variance <= 1e-15:
        p_value = 1.0 if abs(difference) < 1e-12 else 0.0
        return PairedTest("DeLong", difference, p_value, difference, difference, math.nan)
    z = difference / math.sqrt(variance)
    half = norm.ppf(1 - alpha / 2) * math.sqrt(variance)
    return PairedTest("DeLong", difference, float(2 * norm.sf(abs(z))), difference - half, difference + half, z)


def mcnemar_test(labels: np.ndarray, first_pred: np.ndarray, second_pred: np.ndarray) -> PairedTest:
    """Exact McNemar test of accuracy(second) - accuracy(first) on the same patients.

    Only the discordant patients carry information: b = first right and second wrong, c = the reverse; under the
    null each of the b + c is equally likely either way (binomial, p = 0.5). No discordant patient: p = 1."""
    labels = np.asarray(labels)
    first_right = np.asarray(first_pred) == labels
    second_right = np.asarray(second_pred) == labels
    b = int(np.sum(first_right & ~second_right))
    c = int(np.sum(~first_right & second_right))
    difference = (c - b) / labels.size
    p_value = 1.0 if b + c == 0 else float(binomtest(c, b + c, 0.5).pvalue)
    return PairedTest("McNemar", difference, p_value, statistic=float(c - b))


def corrected_resampled_t_test(
    differences: np.ndarray, test_fraction_over_train: float, *, alpha: float = 0.05
) -> PairedTest:
    """Nadeau-Bengio corrected resampled t-test of the mean of per-fold ``differences`` (second - first).

    differences: one per (repeat, fold) test set, J in all; test_fraction_over_train: n_test / n_train of a fold
    (1 for 2-fold cross-validation). Variance of the mean = (1/J + n_test/n_train) * s^2 with s^2 the sample
    variance of the differences; t with J - 1 degrees of freedom; the interval is the matching t interval."""
    differences = np.asarray(differences, dtype=float)
    differences = differences[np.isfinite(differences)]
    folds = differences.size
    if folds < 2:
        return PairedTest("Nadeau-Bengio", float(differences.mean()) if folds else math.nan, math.nan)
    mean = float(differences.mean())
    variance = (1 / folds + test_fraction_over_train) * float(differences.var(ddof=1))
    if variance <= 1e-15:
        p_value = 1.0 if abs(mean) < 1e-12 else 0.0
        return PairedTest("Nadeau-Bengio", mean, p_value, mean, mean)
    t = mean / math.sqrt(variance)
    half = student_t.ppf(1 - alpha / 2, folds - 1) * math.sqrt(variance)
    p_value = float(2 * student_t.sf(abs(t), folds - 1))
    return PairedTest("Nadeau-Bengio", mean, p_value, mean - half, mean + half, t)
