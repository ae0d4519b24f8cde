"""Paired significance tests (models/evaluation/significance.py): DeLong against its definition and by simulation,
McNemar
against the binomial by hand, the Nadeau-Bengio test on correlated folds whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm, ttest_1samp
from scipy.stats import t as student_t
from sklearn.metrics import roc_auc_score

from models.evaluation.significance import corrected_resampled_t_test, delong_covariance, delong_test, mcnemar_test


def two_models(rng: np.random.Generator, n: int, separation: tuple[float, float], shared: float = 0.6):
    """Labels and two scores that share part of their noise (correlated AUCs, as two models of one patient)."""
    labels = (rng.random(n) < 0.4).astype(int)
    common = rng.normal(size=n)
    scores = [labels * sep + shared * common + math.sqrt(1 - shared**2) * rng.normal(size=n) for sep in separation]
    return labels, scores[0], scores[1]


def delong_by_definition(labels: np.ndarray, scores: list[np.ndarray]) -> np.ndarray:
    """DeLong's covariance straight from the definition: psi(x, y) = 1 if x > y, 1/2 if equal, over all pairs."""
    positive = labels == 1
    v10, v01 = [], []
    for score in scores:
        x, y = score[positive][:, None], score[~positive][None, :]
        psi = (x > y) + 0.5 * (x == y)
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    m, n = positive.sum(), (~positive).sum()
    return np.cov(np.array(v10)) / m + np.cov(np.array(v01)) / n


def test_delong_auc_and_covariance_equal_the_definition_with_ties():
    rng = np.random.default_rng(3)
    labels, first, second = two_models(rng, 90, (1.0, 1.4))
    first = np.round(first, 1)  # ties within and across classes
    aucs, covariance = delong_covariance(np.vstack([first, second]), labels)
    assert aucs == pytest.approx([roc_auc_score(labels, first), roc_auc_score(labels, second)], abs=1e-12)
    assert covariance == pytest.approx(delong_by_definition(labels, [first, second]), rel=1e-10, abs=1e-15)
    result = delong_test(labels, first, second)
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    assert result.difference == pytest.approx(aucs[1] - aucs[0])
    assert result.p_value == pytest.approx(2 * norm.sf(abs(result.difference) / math.sqrt(variance)))
    assert result.low < result.difference < result.high


def test_delong_identical_scores_give_p_1_and_different_ones_a_small_p():
    rng = np.random.default_rng(4)
    labels, first, second = two_models(rng, 200, (0.2, 2.0))
    same = delong_test(labels, first, first)
    assert same.difference == 0 and same.p_value == 1.0
    assert delong_test(labels, first, second).p_value < 1e-6
    with pytest.raises(ValueError, match="two patients of each class"):
        delong_test(np.array([1, 0, 0, 0]), np.arange(4.0), np.arange(4.0))


def test_delong_holds_its_level_on_simulated_null_pairs_and_its_interval_covers():
    """Two models with the same true AUC, correlated through shared noise: about 5% of 2000 tests reject at 0.05,
    and the 95% interval covers the true difference 0 about 95% of the time."""
    rng = np.random.default_rng(5)
    results = [delong_test(*two_models(rng, 120, (1.0, 1.0))) for _ in range(2000)]
    rejected = np.mean([r.p_value < 0.05 for r in results])
    covered = np.mean([r.low <= 0 <= r.high for r in results])
    assert 0.035 <= rejected <= 0.065, rejected
    assert 0.935 <= covered <= 0.965, covered


def test_mcnemar_is_the_exact_binomial_on_discordant_patients():
    labels = np.ones(40, dtype=int)
    first = np.ones(40, dtype=int)
    second = np.ones(40, dtype=int)
    second[:10] = 0  # b = 10: first right, second wrong
    first[10:12] = 0  # c = 2: first wrong, second right
    result = mcnemar_test(labels, first, second)
    # two-sided exact: 2 * P(X <= 2), X ~ Binomial(12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert result.p_value == pytest.approx(2 * 79 / 4096)
    assert result.difference == pytest.approx((2 - 10) / 40)
    assert mcnemar_test(labels, first, first).p_value == 1.0


def test_mcnemar_holds_its_level_on_simulated_null_pairs():
    rng = np.random.default_rng(6)
    rejected = []
    for _ in range(2000):
        labels = rng.integers(0, 2, size=84)
        first = np.where(rng.random(84) < 0.75, labels, 1 - labels)  # both right 75% of the time, independently
        second = np.where(rng.random(84) < 0.75, labels, 1 - labels)
        rejected.append(mcnemar_test(labels, first, second).p_value < 0.05)
    assert 0.02 <= np.mean(rejected) <= 0.065  # exact tests are conservative: at most about 5%


def equicorrelated_folds(rng: np.random.Generator, folds: int, rho: float, mean: float = 0.0) -> np.ndarray:
    """Per-fold differences with correlation rho between any two folds (what shared training patients cause)."""
    return mean + math.sqrt(rho) * rng.normal() + math.sqrt(1 - rho) * rng.normal(size=folds)


def test_corrected_t_test_matches_its_formula():
    differences = np.array([0.02, -0.01, 0.03, 0.00, 0.01, 0.04, -0.02, 0.02, 0.01, 0.03])
    result = corrected_resampled_t_test(differences, 1.0)
    variance = (1 / 10 + 1.0) * differences.var(ddof=1)
    t = differences.mean() / math.sqrt(variance)
    assert result.statistic == pytest.approx(t)
    assert result.p_value == pytest.approx(2 * student_t.sf(abs(t), 9))
    assert corrected_resampled_t_test(np.zeros(10), 1.0).p_value == 1.0


def test_corrected_t_test_holds_its_level_where_the_naive_one_does_not():
    """2-fold cross-validation (n_test/n_train = 1) makes fold differences correlate by about 1/2 (Nadeau & Bengio
    2003). With rho = 1/2 exactly the corrected test is exact: it rejects about 5% of null draws; a plain t-test
    over the folds rejects far more."""
    rng = np.random.default_rng(7)
    corrected, naive = [], []
    for _ in range(4000):
        differences = equicorrelated_folds(rng, 10, 0.5)
        corrected.append(corrected_resampled_t_test(differences, 1.0).p_value < 0.05)
        naive.append(ttest_1samp(differences, 0.0).pvalue < 0.05)
    assert 0.04 <= np.mean(corrected) <= 0.06, np.mean(corrected)
    assert np.mean(naive) > 0.3, np.mean(naive)
    shifted = [corrected_resampled_t_test(equicorrelated_folds(rng, 10, 0.5, mean=3.0), 1.0) for _ in range(200)]
    assert np.mean([r.p_value < 0.05 for r in shifted]) > 0.8  # a real difference is still found
