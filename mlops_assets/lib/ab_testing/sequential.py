"""Always-valid daily looks: a confidence sequence for the mean daily difference.

The boundary is the two-sided normal-mixture one of the asymptotic confidence sequence
(Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas, "Time-uniform central limit theory and
asymptotic confidence sequences", Annals of Statistics 2024, Eq. 8/10):

    mean_t +- sd_t * sqrt( 2 (t rho^2 + 1) / (t^2 rho^2) * log( sqrt(t rho^2 + 1) / alpha ) )

with t the number of days, mean_t and sd_t the running mean and standard deviation of the daily
differences, and rho chosen so the sequence is tightest at day `t_star`. The probability that the
sequence EVER excludes the true mean, over all days, is (asymptotically) at most alpha: looking
every day and stopping the first time it excludes 0 keeps the false-positive rate at alpha, which
a fixed-horizon test repeated daily does not (it climbs towards 20-30% over a month of looks).

Why this and not a library: the formula is these few lines of numpy; `expectation` (e-values)
and `spotify-confidence` (group-sequential z-tests over a pre-set final sample size) would add a
dependency for less: the group-sequential bounds need the final number of looks fixed in advance,
which an experiment that may be extended does not have. The A/A replays in bench/ab_validity.py
check the asymptotics on 14-42 real days.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def mixture_rho2(alpha: float, t_star: int) -> float:
    """rho^2 that makes the boundary tightest at t_star observations (paper, Eq. 10)."""
    if not 0 < alpha < 1 or t_star < 1:
        raise ValueError(f"need 0 < alpha < 1 and t_star >= 1, got {alpha}, {t_star}")
    log_term = -2 * math.log(alpha)
    return (log_term + math.log(log_term + 1)) / t_star


def boundary_factor(t: np.ndarray | int, alpha: float, t_star: int) -> np.ndarray:
    """Half-width of the sequence in units of the standard deviation, at t observations."""
    t = np.asarray(t, dtype=float)
    rho2 = mixture_rho2(alpha, t_star)
    return np.sqrt(2 * (t * rho2 + 1) / (t**2 * rho2) * np.log(np.sqrt(t * rho2 + 1) / alpha))


@dataclass(frozen=True)
class Look:
    """The sequence after `days` days: running mean of the daily differences and its bounds."""

    days: int
    mean: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def confidence_sequence(daily: np.ndarray, alpha: float, t_star: int) -> tuple[Look, ...]:
    """One look per day (after day 1, 2, ...); the first day has no spread, so infinite bounds."""
    x = np.asarray(daily, dtype=float)
    if x.ndim != 1 or not np.isfinite(x).all():
        raise ValueError("daily differences must be a 1-D array of finite numbers")
    t = np.arange(1, x.size + 1)
    mean = np.cumsum(x) / t
    with np.errstate(invalid="ignore", divide="ignore"):
        # Running sample variance (ddof=1) from running sums; clipped at 0 against rounding.
        var = np.maximum((np.cumsum(x**2) - t * mean**2) / (t - 1), 0.0)
    half = np.where(t > 1, np.sqrt(var) * boundary_factor(t, alpha, t_star), np.inf)
    return tuple(
        Look(int(n), float(m), float(m - h), float(m + h))
        for n, m, h in zip(t, mean, half, strict=True)
    )
