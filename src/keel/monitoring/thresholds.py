"""Thresholds: learned from the reference's chunk-to-chunk spread by default, fixed on request.

A learned threshold starts from a column's null samples (each reference chunk
against the rest, :mod:`keel.monitoring.reference`). A statistic's spread under
no change shrinks with the effective sample size ``1 / (1/n_ref + 1/n_cur)``:
as its square root for KS, Wasserstein and Jensen-Shannon, linearly for PSI and
KL, not at all for chi-square. The null samples are rescaled from the chunks'
effective size to the window's, then ``warn = mean + 3 sd`` and
``alert = mean + 4 sd``. Twenty chunks estimate a spread only roughly, so a
learned threshold is never below the statistic's large-sample critical value
at p = 0.001 (warn: p = 0.01): Kolmogorov's distribution for KS, chi-square with
(bins - 1) degrees of freedom for chi-square, and, through the chi-square
approximation ``2 N KL ~ N PSI ~ 8 N JS^2 ~ chi2(bins - 1)``, for PSI, KL and JS.
Wasserstein has no such distribution and is learned only.

Without enough reference rows to learn from (fewer than ``n_chunks x 50``),
KS and chi-square use their tests (alert at p < 0.01, warn at p < 0.05, the
threshold given as the critical value of the statistic) and the others the
fixed values in ``FIXED``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from keel.errors import ValidationError

# how the null spread scales with the effective sample size: (neff_chunk / neff_window) ** EXPONENT
EXPONENT = {"ks": 0.5, "wasserstein": 0.5, "js": 0.5, "psi": 1.0, "kl": 1.0, "chi2": 0.0}
WARN_SD, ALERT_SD = 3.0, 4.0
FIXED = {"wasserstein": (0.05, 0.1), "js": (0.05, 0.1), "psi": (0.1, 0.2), "kl": (0.05, 0.1)}  # (warn, alert)
TEST_ALPHA = (0.05, 0.01)  # (warn, alert) p-values of the KS and chi-square tests


@dataclass(frozen=True)
class Threshold:
    warn: float | None
    alert: float
    how: str  # "learned", "fixed", "test"

    def level(self, value: float) -> str:
        if value != value:  # NaN
            return "ok"
        if value > self.alert:
            return "alert"
        if self.warn is not None and value > self.warn:
            return "warn"
        return "ok"


def neff(n: float, m: float) -> float:
    return 0.0 if n <= 0 or m <= 0 else 1.0 / (1.0 / n + 1.0 / m)


FLOOR_ALPHA = (0.01, 0.001)  # (warn, alert)


def floor(method: str, window_neff: float, bins: int) -> tuple[float, float]:
    """(warn, alert) critical values of the statistic under no change, at FLOOR_ALPHA; 0 where none is known."""
    from scipy.special import chdtri, kolmogi

    if window_neff <= 0 or method == "wasserstein":
        return 0.0, 0.0
    if method == "ks":
        root = window_neff**0.5
        return float(kolmogi(FLOOR_ALPHA[0])) / root, float(kolmogi(FLOOR_ALPHA[1])) / root
    crit = [float(chdtri(max(bins - 1, 1), a)) for a in FLOOR_ALPHA]
    if method == "chi2":
        return crit[0], crit[1]
    if method == "psi":
        return crit[0] / window_neff, crit[1] / window_neff
    if method == "kl":
        return crit[0] / (2 * window_neff), crit[1] / (2 * window_neff)
    return (crit[0] / (8 * window_neff)) ** 0.5, (crit[1] / (8 * window_neff)) ** 0.5  # js


def learned(null_samples: list[float], chunk_neff: float, window_neff: float, method: str, bins: int = 10) -> Threshold:
    vals = np.asarray(null_samples, np.float64)
    vals = vals[np.isfinite(vals)]
    scale = (chunk_neff / window_neff) ** EXPONENT[method] if window_neff > 0 else 1.0
    mean, sd = float(vals.mean()) * scale, float(vals.std(ddof=1)) * scale if len(vals) > 1 else 0.0
    lo_warn, lo_alert = floor(method, window_neff, bins) if sd > 0 or mean > 0 else (0.0, 0.0)
    return Threshold(max(mean + WARN_SD * sd, lo_warn), max(mean + ALERT_SD * sd, lo_alert), "learned")


def test_threshold(method: str, n: int, m: int, categories: int) -> Threshold:
    """Critical values of the KS or chi-square test at TEST_ALPHA."""
    from scipy.special import chdtri, kolmogi

    if method == "ks":
        root = max(neff(n, m), 1.0) ** 0.5
        return Threshold(float(kolmogi(TEST_ALPHA[0])) / root, float(kolmogi(TEST_ALPHA[1])) / root, "test")
    dof = max(categories - 1, 1)
    return Threshold(float(chdtri(dof, TEST_ALPHA[0])), float(chdtri(dof, TEST_ALPHA[1])), "test")


def fixed(value: Any, method: str) -> Threshold:
    """A user's threshold: a number (alert) or a (warn, alert) pair."""
    if isinstance(value, list | tuple):
        if len(value) != 2:
            raise ValidationError(f"Threshold {value!r} for {method} is not (warn, alert).", hint="Give one number or two.")
        warn, alert = float(value[0]), float(value[1])
        return Threshold(warn, alert, "fixed")
    try:
        return Threshold(None, float(value), "fixed")
    except (TypeError, ValueError):
        raise ValidationError(f"Threshold {value!r} for {method} is not a number.", hint="Give e.g. 0.2 or (0.1, 0.2).") from None


def default_fixed(method: str) -> Threshold:
    warn, alert = FIXED[method]
    return Threshold(warn, alert, "fixed")
