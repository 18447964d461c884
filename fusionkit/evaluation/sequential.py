"""Seeds in stages: a group-sequential design over training seeds, and the simultaneous intervals verdicts use.

A study that declares ``seeds: {first: 3, max: 20, looks: 4}`` trains every system on the first 3 seeds, judges
its primary comparisons, and gives more seeds only to those still undecided, at 4 looks in all (3, 9, 14, 20
seeds). Peeking at the data after each look would inflate the error rate if every look used the fixed-design
critical value; here each comparison spends its share of alpha over the looks with the Lan-DeMets spending
function of O'Brien-Fleming type (Lan & DeMets 1983, "Discrete sequential boundaries for clinical trials"),
two-sided and symmetric as gsDesign's ``test.type=2, sfu=sfLDOF`` computes it (``alpha / 2`` spent on each side:
``2 - 2 Phi(z_{1 - alpha/4} / sqrt(t))``), its boundaries found by the numerical integration of gsDesign (the
``gsdesign`` package, Jennison & Turnbull 2000, ch. 19). The information fraction of a look is its seeds over ``max``.

Seeds are few, so a look's normal boundary ``c_k`` is carried to the t-test by its nominal level: the interval at
look k is ``mean +/- t_{n_k - 1}(1 - p_k / 2) * se`` with ``p_k = 2 (1 - Phi(c_k))`` (Jennison & Turnbull 2000,
section 11.4: "use the nominal significance levels of the normal boundaries"). These are repeated confidence
intervals (Jennison & Turnbull 1989): they cover the true difference at every look at once with probability
``1 - alpha``, so a comparison may stop at any look for any outcome, helps, hurts or equivalent. Over the
``m`` comparisons of a family, each spends ``alpha / m`` (Bonferroni): the intervals are simultaneous over
comparisons and looks. A fixed design (a list of seeds) is one look: the interval is the Bonferroni t-interval.
``simulate_design`` checks the error rate, the power and the seeds spent by simulation (tests/test_sequential.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.optimize
import scipy.stats

from fusionkit.errors import InputError
from fusionkit.evaluation.gains import HELPS, HURTS, INCONCLUSIVE, outcome
from fusionkit.evaluation.metrics import check_in_range
from fusionkit.evaluation.stats import paired_t_power

GRID_POINTS = 18  # gsDesign's default grid (r): boundaries to about 1e-6


def obrien_fleming_spending(fraction, alpha: float):
    """Alpha spent by information fraction ``fraction`` (two-sided, symmetric: ``alpha / 2`` each side) under the
    Lan-DeMets O'Brien-Fleming-type spending function: ``2 (2 - 2 Phi(z_{1 - alpha/4} / sqrt(t)))``."""
    t = np.asarray(fraction, dtype=float)
    per_side = 2 - 2 * scipy.stats.norm.cdf(scipy.stats.norm.ppf(1 - alpha / 4) / np.sqrt(t))
    return 2 * per_side


@lru_cache(maxsize=256)
def obrien_fleming_boundaries(fractions: tuple[float, ...], alpha: float) -> tuple[float, ...]:
    """The normal boundaries c_1..c_K of a two-sided symmetric design (reject at look k when |Z_k| >= c_k) that
    spends ``obrien_fleming_spending`` at the information ``fractions`` (increasing, the last 1). With 4 equally
    spaced looks at alpha 0.05 they are gsDesign's 4.33, 2.96, 2.36, 2.01."""
    from gsdesign import h1, hupdate

    check_in_range(alpha, "alpha", 0.0, 1.0)
    fractions = tuple(float(f) for f in fractions)
    if not fractions or any(b <= a for a, b in zip(fractions, fractions[1:])) or fractions[0] <= 0 \
            or abs(fractions[-1] - 1) > 1e-12:
        raise InputError(f"information fractions must increase from above 0 to 1, got {list(fractions)}")
    spent = np.diff(np.concatenate([[0.0], obrien_fleming_spending(np.array(fractions), alpha)]))
    boundaries, density = [], None
    for look, (fraction, increment) in enumerate(zip(fractions, spent)):
        if look == 0:
            bound = float(scipy.stats.norm.isf(increment / 2))
            density = h1(GRID_POINTS, 0.0, fraction, -bound, bound)
        else:
            previous, carried = fractions[look - 1], density

            def crossing(c: float) -> float:  # P(continue to this look, then |Z| >= c), both sides
                return 2 * float(hupdate(GRID_POINTS, 0.0, fraction, c, np.inf, 0.0, previous, carried)[2].sum())
            bound = float(scipy.optimize.brentq(lambda c: crossing(c) - increment, 0.0, 40.0, xtol=1e-10))
            density = hupdate(GRID_POINTS, 0.0, fraction, -bound, bound, 0.0, previous, carried)
        boundaries.append(bound)
    return tuple(boundaries)


@dataclass(frozen=True)
class SeedDesign:
    """When a study looks at its seeds: ``looks`` is the cumulative number of seeds at each look (one look: a
    fixed design). Made from a study's ``seeds`` parameter by ``from_parameter``."""

    looks: tuple[int, ...]

    def __post_init__(self):
        looks = tuple(int(n) for n in self.looks)
        if not looks or looks[0] < 1 or any(b <= a for a, b in zip(looks, looks[1:])):
            raise InputError(f"looks must be increasing seed counts >= 1, got {list(self.looks)}")
        object.__setattr__(self, "looks", looks)

    @classmethod
    def staged(cls, first: int, max: int, looks: int) -> "SeedDesign":  # noqa: A002 (the study file's word)
        """``looks`` looks from ``first`` to ``max`` seeds, equally spaced (rounded): 3, 20, 4 -> 3, 9, 14, 20."""
        if not 2 <= first <= max or looks < 1 or (looks > 1 and max - first < looks - 1):
            raise InputError(f"seeds: need 2 <= first <= max and at most max - first + 1 looks, got first={first}, "
                             f"max={max}, looks={looks}")
        if looks == 1:
            return cls((max,))
        return cls(tuple(int(round(first + (max - first) * k / (looks - 1))) for k in range(looks)))

    @classmethod
    def from_parameter(cls, seeds) -> "SeedDesign":
        """A study's ``seeds``: a list (a fixed design, one look) or ``{first, max, looks}`` (stages)."""
        if isinstance(seeds, dict):
            return cls.staged(seeds["first"], seeds["max"], seeds["looks"])
        return cls((len(seeds),))

    @property
    def staged_design(self) -> bool:
        return len(self.looks) > 1

    @property
    def max_seeds(self) -> int:
        return self.looks[-1]

    def look_of(self, n_seeds: int) -> int:
        """The index of the last look ``n_seeds`` seeds have reached (a fixed design: 0 for any count)."""
        if not self.staged_design:
            return 0
        reached = [k for k, n in enumerate(self.looks) if n <= n_seeds]
        return reached[-1] if reached else 0

    def nominal_level(self, n_seeds: int, alpha: float, comparisons: int = 1) -> float:
        """The two-sided nominal level of the interval a comparison with ``n_seeds`` seeds is judged on, one of
        ``comparisons`` sharing ``alpha`` (Bonferroni): ``alpha / comparisons`` for a fixed design, the level
        of its look's O'Brien-Fleming boundary otherwise."""
        share = alpha / max(1, comparisons)
        if not self.staged_design:
            return share
        fractions = tuple(n / self.max_seeds for n in self.looks)
        bound = obrien_fleming_boundaries(fractions, share)[self.look_of(n_seeds)]
        return float(2 * scipy.stats.norm.sf(bound))


def seed_interval(mean: float, standard_error: float, df: float, level: float) -> tuple[float, float]:
    """The t-interval ``mean +/- t_df(1 - level / 2) * standard_error``."""
    half = scipy.stats.t.isf(level / 2, df) * standard_error
    return float(mean - half), float(mean + half)


def simulate_design(design: SeedDesign, effects, sd: float, alpha: float, min_effect: float,
                    n_studies: int = 1000, seed: int = 0) -> dict:
    """Simulate ``n_studies`` studies of ``len(effects)`` comparisons (per-seed differences ~ N(effect, sd^2),
    independent), each judged at every look of ``design`` as a study does and stopped once decided. Returns
    ``outcomes`` (studies x comparisons, the final words), ``seeds`` (the seeds each spent), ``look`` (the index
    of the look it stopped at) and ``family_error`` (the share of studies with any helps/hurts on a comparison
    whose effect is 0, or of the wrong sign) with its Monte-Carlo standard error."""
    effects = np.asarray(effects, dtype=float)
    m = len(effects)
    rng = np.random.default_rng(seed)
    differences = rng.normal(effects, sd, size=(n_studies, design.max_seeds, m))
    outcomes = np.full((n_studies, m), INCONCLUSIVE, dtype=object)
    spent = np.full((n_studies, m), design.max_seeds)
    stopped_at = np.full((n_studies, m), len(design.looks) - 1)
    open_ = np.ones((n_studies, m), dtype=bool)
    for k, n in enumerate(design.looks):
        level = design.nominal_level(n, alpha, m)
        sample = differences[:, :n, :]
        mean = sample.mean(axis=1)
        half = scipy.stats.t.isf(level / 2, n - 1) * sample.std(axis=1, ddof=1) / np.sqrt(n)
        words = np.vectorize(lambda g, lo, hi: outcome(g, lo, hi, min_effect), otypes=[object])(
            mean, mean - half, mean + half)
        decide = open_ & (words != INCONCLUSIVE) if k < len(design.looks) - 1 else open_
        outcomes[decide], spent[decide], stopped_at[decide] = words[decide], n, k
        open_ &= ~decide
    wrong = ((outcomes == HELPS) & (effects <= 0)) | ((outcomes == HURTS) & (effects >= 0))
    family_error = float(wrong.any(axis=1).mean())
    return {"outcomes": outcomes, "seeds": spent, "look": stopped_at, "family_error": family_error,
            "family_error_se": float(np.sqrt(family_error * (1 - family_error) / n_studies))}


def fixed_seeds_for_power(effect: float, sd: float, alpha: float, comparisons: int, power: float,
                          limit: int = 1000) -> int:
    """The seeds a fixed design needs to detect ``effect`` with ``power`` by a two-sided paired t-test at
    ``alpha / comparisons`` (Bonferroni), the benchmark a staged design's average seeds are compared with."""
    for n in range(2, limit + 1):
        if paired_t_power(effect / sd, n, alpha / comparisons) >= power:
            return n
    return limit
