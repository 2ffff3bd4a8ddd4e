"""Is a change between two periods beyond noise? Two-sided z-tests at the 5% level.

- counts (requests, users, sessions): two Poisson counts over equal periods,
  z = (a - b) / sqrt(a + b);
- totals of per-request amounts (cost, tokens): compound Poisson, z = (A - B) / sqrt(Σa² + Σb²);
- averages (latency): Welch's z from means and variances;
- rates (errors): the pooled two-proportion z-test;
- the p95: the shares of both periods' requests slower than the previous p95 (two proportions).
Below `MIN_SAMPLE` observations on either side, nothing is called significant, and a
quantity that did not change is never significant (`unless_unchanged`): the p95 test compares
shares of requests, which can differ while the two p95s, read from the same sketch bin, are equal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z_CRITICAL = 1.959964  # two-sided, 5%
MIN_SAMPLE = 30

HELP = (
    "A change is marked when a two-sided test at the 5% level says it is beyond noise: "
    "Poisson tests for counts and totals, Welch's test for average latency, a two-proportion "
    "test for rates, and for the p95 the same test on the shares of requests slower than "
    "the previous p95. With fewer than 30 requests on either side nothing is marked."
)


@dataclass(frozen=True)
class Verdict:
    z: float | None

    @property
    def significant(self) -> bool:
        return self.z is not None and abs(self.z) >= Z_CRITICAL


NONE = Verdict(None)


def _z(diff: float, variance: float) -> Verdict:
    if variance <= 0:
        return Verdict(0.0 if diff == 0 else None)
    return Verdict(diff / math.sqrt(variance))


def counts(a: int, b: int) -> Verdict:
    if a + b < MIN_SAMPLE:
        return NONE
    return _z(a - b, a + b)


def totals(
    sum_a: float, sumsq_a: float, n_a: int, sum_b: float, sumsq_b: float, n_b: int
) -> Verdict:
    if min(n_a, n_b) < MIN_SAMPLE:
        return NONE
    return _z(sum_a - sum_b, sumsq_a + sumsq_b)


def means(
    sum_a: float, sumsq_a: float, n_a: int, sum_b: float, sumsq_b: float, n_b: int
) -> Verdict:
    if min(n_a, n_b) < MIN_SAMPLE:
        return NONE
    mean_a, mean_b = sum_a / n_a, sum_b / n_b
    var_a = max(sumsq_a / n_a - mean_a**2, 0.0) * n_a / (n_a - 1)
    var_b = max(sumsq_b / n_b - mean_b**2, 0.0) * n_b / (n_b - 1)
    return _z(mean_a - mean_b, var_a / n_a + var_b / n_b)


def proportions(hits_a: int, n_a: int, hits_b: int, n_b: int) -> Verdict:
    if min(n_a, n_b) < MIN_SAMPLE:
        return NONE
    pooled = (hits_a + hits_b) / (n_a + n_b)
    return _z(hits_a / n_a - hits_b / n_b, pooled * (1 - pooled) * (1 / n_a + 1 / n_b))


def sumsq(row: dict, metric: str, n: int) -> float:
    """Σx² from count, mean and sample standard deviation (what the noise tests need), read
    from a metrics row's `<metric>.avg` and `<metric>.stddev`."""
    mean, sd = row.get(f"{metric}.avg"), row.get(f"{metric}.stddev")
    if not n or mean is None:
        return 0.0
    return (n - 1) * (sd or 0.0) ** 2 + n * mean**2


def unless_unchanged(verdict: Verdict, current: float | None, previous: float | None) -> Verdict:
    """The verdict, except that a zero change (or nothing to compare) is never beyond noise."""
    if current is None or previous is None:
        return NONE
    if math.isclose(current, previous, rel_tol=1e-9, abs_tol=0.0):
        return Verdict(0.0)
    return verdict
