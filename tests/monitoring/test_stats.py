"""Every drift statistic equals SciPy's on the same inputs (to 1e-9)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.stats as ss
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.special import kolmogorov

from keel.monitoring import stats as S


def _cols(rng: np.random.Generator, n: int) -> np.ndarray:
    x = np.column_stack([rng.normal(size=n), rng.exponential(size=n), np.round(rng.normal(size=n), 1), rng.integers(0, 5, n).astype(float)])
    x[rng.random(n) < 0.1, 1] = np.nan
    return x


def test_ks_and_wasserstein_equal_scipy_per_column() -> None:
    rng = np.random.default_rng(0)
    ref, cur = _cols(rng, 3000), _cols(rng, 2000) * 1.1 + 0.05
    ks, wd = S.ks_wasserstein(np.sort(ref, axis=0), cur)
    for j in range(ref.shape[1]):
        r, c = ref[:, j][~np.isnan(ref[:, j])], cur[:, j][~np.isnan(cur[:, j])]
        assert ks[j] == pytest.approx(ss.ks_2samp(r, c).statistic, abs=1e-9)
        assert wd[j] == pytest.approx(ss.wasserstein_distance(r, c), abs=1e-9)
        assert S.ks_pvalue(ks[j], len(r), len(c)) == pytest.approx(kolmogorov(np.sqrt(len(r) * len(c) / (len(r) + len(c))) * ks[j]), abs=1e-12)


def test_blocks_of_columns_give_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    ref, cur = np.sort(_cols(rng, 1000), axis=0), _cols(rng, 800)
    whole = S.ks_wasserstein(ref, cur)
    monkeypatch.setattr(S, "MAX_BLOCK_CELLS", 1)  # one column per block
    split = S.ks_wasserstein(ref, cur)
    np.testing.assert_allclose(whole, split, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-5, 5), min_size=1, max_size=40), st.lists(st.integers(-5, 5), min_size=1, max_size=40))
def test_ks_wasserstein_with_ties_equal_scipy(a: list[int], b: list[int]) -> None:
    ref, cur = np.sort(np.asarray(a, float))[:, None], np.asarray(b, float)[:, None]
    ks, wd = S.ks_wasserstein(ref, cur)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # scipy's p-value on one-row samples divides by zero
        expected = ss.ks_2samp(a, b, method="asymp").statistic
    assert ks[0] == pytest.approx(expected, abs=1e-9)
    assert wd[0] == pytest.approx(ss.wasserstein_distance(a, b), abs=1e-9)


def test_binned_statistics_equal_scipy() -> None:
    rng = np.random.default_rng(2)
    for _ in range(20):
        a = rng.integers(0, 50, 8).astype(float)
        b = rng.integers(0, 50, 8).astype(float)
        a[rng.integers(0, 8)] = 0  # an empty bin on one side (and, by chance, some on both: they drop out)
        keep = (a + b) > 0
        p, q = S.shares(a[keep]), S.shares(b[keep])
        assert S.psi(a, b) == pytest.approx(ss.entropy(q, p) + ss.entropy(p, q), abs=1e-9)
        assert S.kl(a, b) == pytest.approx(ss.entropy(q, p), abs=1e-9)
        assert S.js(a, b) == pytest.approx(jensenshannon(p, q), abs=1e-9)
        stat, pv = S.chi2(a, b)
        res = ss.chi2_contingency(np.stack([a[keep], b[keep]]), correction=False)
        assert stat == pytest.approx(res.statistic, abs=1e-9)
        assert pv == pytest.approx(res.pvalue, abs=1e-9)


def test_bins_empty_on_both_sides_drop_out() -> None:
    a, b = np.array([10.0, 0, 5, 0]), np.array([3.0, 4, 5, 0])
    p, q = S.shares(a[:3]), S.shares(b[:3])
    assert S.js(a, b) == pytest.approx(jensenshannon(p, q), abs=1e-12)
    assert S.psi(a, b) == pytest.approx(ss.entropy(q, p) + ss.entropy(p, q), abs=1e-12)


def test_vectorized_over_rows_of_count_matrices() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.integers(1, 40, (5, 6)).astype(float), rng.integers(1, 40, (5, 6)).astype(float)
    np.testing.assert_allclose(S.js(a, b), [S.js(a[i], b[i]) for i in range(5)], atol=1e-12)
    np.testing.assert_allclose(S.chi2(a, b)[0], [S.chi2(a[i], b[i])[0] for i in range(5)], atol=1e-9)


def test_chunk_statistics_equal_scipy_chunk_against_rest() -> None:
    rng = np.random.default_rng(4)
    v = rng.normal(size=2000)
    v[::17] = np.nan
    labels = np.arange(2000) * 5 // 2000
    ks, wd = S.chunk_ks_wasserstein(v, labels, 5)
    for k in range(5):
        a, b = v[labels == k], v[labels != k]
        a, b = a[~np.isnan(a)], b[~np.isnan(b)]
        assert ks[k] == pytest.approx(ss.ks_2samp(a, b, method="asymp").statistic, abs=1e-9)
        assert wd[k] == pytest.approx(ss.wasserstein_distance(a, b), abs=1e-9)
    codes = S.bin_codes(v, S.quantile_edges(v, 10))
    per, rest = S.chunk_counts(codes, labels, 5, 10)
    assert per[2].tolist() == S.counts(codes[labels == 2], 10).tolist()
    assert (per + rest)[0].tolist() == S.counts(codes, 10).tolist()


def test_empty_side_gives_nan_not_an_error() -> None:
    ks, wd = S.ks_wasserstein(np.sort(np.random.default_rng(5).normal(size=(50, 1)), axis=0), np.full((10, 1), np.nan))
    assert np.isnan(ks[0]) and np.isnan(wd[0])


def test_quantiles_from_a_sorted_array_equal_numpy() -> None:
    v = np.random.default_rng(9).normal(size=1001)
    qs = np.linspace(0, 1, 11)
    np.testing.assert_allclose(S.sorted_quantiles(np.sort(v), qs), np.quantile(v, qs), atol=1e-12)
