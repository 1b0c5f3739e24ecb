"""Distribution statistics for drift: histograms, PSI, KS, Wasserstein, chi-square, Jensen–Shannon,
MMD, and the noise each effect size shows on two samples of ONE distribution (what drift.py
subtracts so an effect does not grow just because a window is small).

Pure numpy/scipy. Every function accepts empty inputs and NaN without raising: NaN values are
dropped by the caller-facing helpers (and counted apart as "missing" by ``numeric_summary``),
degenerate comparisons return "no evidence of drift" (statistic 0, p-value 1).

Histogram convention: ``edges`` are the INNER edges e_0 < … < e_{k-1} taken from the baseline's
quantiles; there are k + 1 bins, right-closed, with open outer bins: (-inf, e_0], (e_0, e_1], …,
(e_{k-1}, +inf). The edges are quantiles taken with ``method="inverted_cdf"``, so each edge is a
value the baseline actually holds (numpy's default interpolates between values: a feature taking
only 0, 1 and 2 got edges like 0.8 and 1.6 and bins no value could ever fall in). With right-closed
bins a value sits in the bin its edge closes: a heavily repeated value (0 on an image border) fills
exactly one bin, and a 3-valued feature gets one bin per value (plus the open bin above its max).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as sstats
from scipy.spatial.distance import jensenshannon

N_BINS = 10
# PSI's log ratio is undefined for an empty bin. Proportions below PSI_EPSILON are raised to it:
# one empty bin against a bin holding a share q then adds (q - 1e-4) * ln(q / 1e-4), i.e. ~0.02
# for q = 0.5 % (one stray row in 200) and ~0.7 for q = 10 % — rare outliers stay cheap, a real
# new mode does not.
PSI_EPSILON = 1e-4
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
MMD_MAX_ROWS = 500
MMD_PERMUTATIONS = 200


def _finite_float(x: Any) -> float | None:
    """A JSON-safe float (NaN/inf → None)."""
    f = float(x)
    return f if math.isfinite(f) else None


def as_float_array(values: Any) -> np.ndarray:
    """1-D float64 array; anything unparsable becomes NaN (never raises for odd objects)."""
    try:
        return np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        out = []
        for v in np.asarray(values, dtype=object).reshape(-1):
            try:
                out.append(float(v))
            except (TypeError, ValueError):
                out.append(math.nan)
        return np.asarray(out, dtype=np.float64)


def finite(values: Any) -> np.ndarray:
    """The finite values of ``values`` (NaN and ±inf dropped)."""
    arr = as_float_array(values)
    return arr[np.isfinite(arr)]


# --------------------------------------------------------------------------- histograms


def histogram_edges(values: Any, n_bins: int = N_BINS) -> list[float]:
    """Inner edges from the quantiles 1/n … (n-1)/n of the finite values (values the data
    holds), duplicates removed.

    A single-valued feature gets two edges (just below the value and the value) so that values
    below, equal to and above it land in three different bins. No finite values → no edges
    (one bin holding everything).
    """
    x = finite(values)
    if x.size == 0:
        return []
    with np.errstate(over="ignore", invalid="ignore"):  # interpolating near ±1e308 may overflow
        qs = np.quantile(x, np.linspace(0.0, 1.0, n_bins + 1)[1:-1], method="inverted_cdf") \
            if n_bins > 1 else np.array([])
    edges = np.unique(qs[np.isfinite(qs)])
    if edges.size <= 1:
        v = float(edges[0]) if edges.size else float(x[0])
        with np.errstate(over="ignore"):
            below = np.nextafter(v, -np.inf)
        # at the lowest float nothing lies below: bin the value with the edge just above it
        edges = np.array([below, v] if np.isfinite(below) else [v, np.nextafter(v, np.inf)])
    return [float(e) for e in edges]


def histogram_counts(values: Any, edges: Sequence[float]) -> list[int]:
    """Counts of the finite values in the len(edges) + 1 right-closed, open-ended bins."""
    x = finite(values)
    e = np.asarray(edges, dtype=np.float64)
    idx = np.searchsorted(e, x, side="left")  # e[i-1] < x <= e[i]  →  bin i
    return [int(c) for c in np.bincount(idx, minlength=e.size + 1)]


def numeric_summary(values: Any, *, edges: Sequence[float] | None = None, max_sample: int = 2000,
                    seed: int = 0, n_bins: int = N_BINS, reference_sample: Sequence[float] | None = None) -> dict:
    """The numeric feature profile: n, missing, mean/std/min/max, quantiles, histogram, sample.

    ``edges=None`` derives the binning from these values (a baseline); pass the baseline's edges
    to profile a current window on the same bins. ``sample`` is a seeded random subset of at most
    ``max_sample`` finite values (kept for effect sizes and plots). With ``reference_sample`` (the
    baseline's), ``ks`` holds the KS test of the WHOLE window against it (see ``ks_against``).
    """
    arr = as_float_array(values)
    mask = np.isfinite(arr)
    x = arr[mask]
    if edges is None:
        edges = histogram_edges(x, n_bins)
    summary: dict[str, Any] = {"type": "numeric", "n": int(x.size), "missing": int(arr.size - x.size)}
    if x.size:
        with np.errstate(over="ignore", invalid="ignore"):  # huge values: inf → None, not a warning
            qv = np.quantile(x, QUANTILES)
            mean, std = x.mean(), x.std()
        summary.update(mean=_finite_float(mean), std=_finite_float(std),
                       min=_finite_float(x.min()), max=_finite_float(x.max()),
                       quantiles={f"p{round(q * 100)}": _finite_float(v) for q, v in zip(QUANTILES, qv)})
    else:
        summary.update(mean=None, std=None, min=None, max=None, quantiles={})
    summary["edges"] = [float(e) for e in edges]
    summary["counts"] = histogram_counts(x, edges)
    if reference_sample is not None:
        statistic, pvalue, used = ks_against(reference_sample, x, seed=seed)
        summary["ks"] = {"statistic": statistic, "pvalue": pvalue, "n": used}
    if x.size > max_sample:
        x = np.random.default_rng(seed).choice(x, size=max_sample, replace=False)
    summary["sample"] = [float(v) for v in x]
    return summary


def proportions(counts: Sequence[float], epsilon: float = PSI_EPSILON) -> np.ndarray:
    """Counts → shares, each raised to at least ``epsilon``; all-zero counts → uniform."""
    c = np.asarray(counts, dtype=np.float64)
    c = np.where(np.isfinite(c) & (c > 0), c, 0.0)
    total = c.sum()
    if c.size == 0:
        return c
    p = c / total if total > 0 else np.full(c.size, 1.0 / c.size)
    return np.maximum(p, epsilon)


def psi(baseline_counts: Sequence[float], current_counts: Sequence[float],
        epsilon: float = PSI_EPSILON) -> float:
    """Population stability index Σ (c - b) · ln(c / b) over the shares of the same bins.

    Shares below ``epsilon`` are raised to it (empty bins). Every term is ≥ 0 (c - b and
    ln(c / b) share their sign), so PSI ≥ 0 and PSI(x, x) = 0. Either side empty → 0 (no data,
    no evidence). Bin lists of different length are zero-padded on the right.
    """
    b = np.asarray(baseline_counts, dtype=np.float64)
    c = np.asarray(current_counts, dtype=np.float64)
    size = max(b.size, c.size)
    if size == 0:
        return 0.0
    b = np.pad(b, (0, size - b.size))
    c = np.pad(c, (0, size - c.size))
    if np.nansum(np.where(b > 0, b, 0)) <= 0 or np.nansum(np.where(c > 0, c, 0)) <= 0:
        return 0.0
    pb, pc = proportions(b, epsilon), proportions(c, epsilon)
    return float(max(0.0, np.sum((pc - pb) * np.log(pc / pb))))


def ks_test(baseline_values: Any, current_values: Any) -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov (statistic, p-value) on the finite values; empty → (0, 1)."""
    a, b = finite(baseline_values), finite(current_values)
    if a.size == 0 or b.size == 0:
        return 0.0, 1.0
    res = sstats.ks_2samp(a, b)
    return float(res.statistic), float(res.pvalue)


KS_MAX_VALUES = 100_000


def ks_against(reference_sample: Any, values: Any, *, max_values: int = KS_MAX_VALUES,
               seed: int = 0) -> tuple[float, float, int]:
    """KS test of a window's values (all of them up to ``max_values``, else a seeded subset of that
    many) against the baseline's stored sample: (statistic, p-value, values used).

    The test's power rests on n_b·n_c / (n_b + n_c); with the baseline's 5,000-value sample that is
    < 5,000 however large the window, and 100,000 window values give 4,762 — 96 % of what all rows of
    a 1M-row window would (4,975) at a tenth of the cost. Exact p-values for small samples,
    asymptotic ones otherwise (scipy's ``ks_2samp``, method "auto").
    """
    x = finite(values)
    if x.size > max_values:
        x = np.random.default_rng(seed).choice(x, size=max_values, replace=False)
    statistic, pvalue = ks_test(reference_sample, x)
    return statistic, pvalue, int(x.size)


def psi_noise(bins: int, n_baseline: float, n_current: float) -> float:
    """Expected PSI of two samples of one distribution over ``bins`` bins: (bins - 1)(1/n_b + 1/n_c)
    (PSI is a symmetrised chi-square divergence; under no shift n·PSI ~ χ²(bins - 1)). At 10 bins
    and 200 rows that is ≈ 0.05, at 50 rows ≈ 0.19 — the raw PSI of a small window is mostly noise."""
    if bins < 2 or n_baseline <= 0 or n_current <= 0:
        return 0.0
    return (bins - 1) * (1.0 / n_baseline + 1.0 / n_current)


def wasserstein_shift(baseline_values: Any, current_values: Any, scale: float | None) -> dict[str, float]:
    """How far the distribution moved, in ``scale`` units (the baseline's standard deviation): the
    Wasserstein-1 distance of the two samples, and the same with its sampling noise removed.

    W1 = ∫|F_b - F_c| dx; a pure mean shift of d standard deviations gives d, a spread ×1.5 of a
    normal ≈ 0.4. Two samples of ONE distribution still differ: √(n_b n_c/(n_b+n_c))·(F_b - F_c)
    tends to a Brownian bridge B(F), and E|B(t)| = √(2/π)·√(t(1-t)), so the noise level is
    √(2/π)·√(1/n_b + 1/n_c)·∫√(F(1-F)) dx (F estimated from the baseline sample). It is taken off
    in quadrature — observed² ≈ effect² + noise² — so the corrected shift does not fall or rise
    with the window's size. → ``{"raw", "noise", "corrected"}``; empty sides → zeros.
    """
    a, b = finite(baseline_values), finite(current_values)
    if a.size == 0 or b.size == 0:
        return {"raw": 0.0, "noise": 0.0, "corrected": 0.0}
    unit = float(scale) if scale is not None and math.isfinite(float(scale)) and float(scale) > 0 else 1.0
    raw = float(sstats.wasserstein_distance(a, b)) / unit
    xs = np.sort(a)
    t = np.arange(1, xs.size) / xs.size
    spread = float(np.sum(np.diff(xs) * np.sqrt(t * (1.0 - t)))) / unit
    noise = math.sqrt(2.0 / math.pi) * math.sqrt(1.0 / a.size + 1.0 / b.size) * spread
    return {"raw": raw, "noise": noise, "corrected": math.sqrt(max(0.0, raw * raw - noise * noise))}


# --------------------------------------------------------------------------- categorical


def aligned_counts(baseline: Mapping[str, float], current: Mapping[str, float]
                   ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Both count dicts over one category list: the baseline's order, then categories only the
    current window holds (kept as their own column, not merged)."""
    cats = list(baseline)
    cats += [k for k in current if k not in baseline]
    b = np.array([float(baseline.get(k, 0) or 0) for k in cats], dtype=np.float64)
    c = np.array([float(current.get(k, 0) or 0) for k in cats], dtype=np.float64)
    b = np.where(np.isfinite(b) & (b > 0), b, 0.0)
    c = np.where(np.isfinite(c) & (c > 0), c, 0.0)
    return cats, b, c


def chi2_test(baseline: Mapping[str, float] | Sequence[float], current: Mapping[str, float] | Sequence[float],
              *, scale_to: tuple[float | None, float | None] = (None, None)) -> tuple[float, float]:
    """Chi-square test of homogeneity on the 2×K table (statistic, p-value).

    Dicts are aligned with ``aligned_counts``; columns empty on both sides are dropped. A
    degenerate table (an empty side, fewer than two columns) → (0, 1). ``scale_to`` rescales a
    row to that total first: for counts that are not independent draws (tokens of one document),
    the row is scaled to the number of independent units (documents) so the test is not
    overconfident.
    """
    if isinstance(baseline, Mapping) or isinstance(current, Mapping):
        _, b, c = aligned_counts(dict(baseline), dict(current))  # type: ignore[arg-type]
    else:
        b = np.nan_to_num(np.asarray(baseline, dtype=np.float64), nan=0.0)
        c = np.nan_to_num(np.asarray(current, dtype=np.float64), nan=0.0)
        size = max(b.size, c.size)
        b, c = np.pad(b, (0, size - b.size)), np.pad(c, (0, size - c.size))
    for i, total in enumerate(scale_to):
        row = b if i == 0 else c
        if total is not None and row.sum() > 0:
            row *= float(total) / row.sum()
    keep = (b + c) > 0
    b, c = b[keep], c[keep]
    if b.size < 2 or b.sum() <= 0 or c.sum() <= 0:
        return 0.0, 1.0
    chi2, p, _, _ = sstats.chi2_contingency(np.vstack([b, c]), correction=False)
    if not (math.isfinite(chi2) and math.isfinite(p)):
        return 0.0, 1.0
    return float(chi2), float(p)


def js_distance(baseline: Mapping[str, float] | Sequence[float],
                current: Mapping[str, float] | Sequence[float]) -> float:
    """Jensen–Shannon distance (base 2, in [0, 1]) between the two count distributions.

    Either side empty → 0.
    """
    if isinstance(baseline, Mapping) or isinstance(current, Mapping):
        _, b, c = aligned_counts(dict(baseline), dict(current))  # type: ignore[arg-type]
    else:
        b = np.nan_to_num(np.asarray(baseline, dtype=np.float64), nan=0.0)
        c = np.nan_to_num(np.asarray(current, dtype=np.float64), nan=0.0)
        size = max(b.size, c.size)
        b, c = np.pad(b, (0, size - b.size)), np.pad(c, (0, size - c.size))
    if b.size == 0 or b.sum() <= 0 or c.sum() <= 0:
        return 0.0
    d = float(jensenshannon(b, c, base=2))
    return min(1.0, max(0.0, d)) if math.isfinite(d) else 0.0


def js_noise(categories: int, n_baseline: float, n_current: float) -> float:
    """Expected squared JS distance (base 2) of two samples of one distribution over ``categories``
    categories: (K - 1)(1/n_b + 1/n_c) / (8 ln 2) — for close distributions JSD ≈ Σ(p - q)²/(8 m),
    and under no shift Σ(p̂ - q̂)²/p has mean (K - 1)(1/n_b + 1/n_c). Ten classes at 200 rows:
    ≈ 0.009, i.e. a JS distance of ≈ 0.09 from noise alone."""
    if categories < 2 or n_baseline <= 0 or n_current <= 0:
        return 0.0
    return (categories - 1) * (1.0 / n_baseline + 1.0 / n_current) / (8.0 * math.log(2.0))


def js_corrected(distance: float, categories: int, n_baseline: float, n_current: float) -> float:
    """A JS distance with its expected noise taken off (on the squared scale, where it adds)."""
    return math.sqrt(max(0.0, distance * distance - js_noise(categories, n_baseline, n_current)))


def log_evidence(baseline_counts: Sequence[float], current_counts: Sequence[float], *,
                 prior: float = 0.5) -> float:
    """Natural log of an anytime-valid e-value that the current counts come from a different
    distribution than the baseline's (the same cells: bins or categories).

    A Bayes factor of two Dirichlet-multinomial predictions of the current counts: "different" —
    its own distribution under a Jeffreys prior (``prior`` per cell) — against "same" — the
    baseline's counts plus that prior as the posterior of one shared distribution. Its expectation
    under "same" is 1, and as rows accumulate it is a martingale, so by Ville's inequality the
    chance it EVER reaches 1/α while nothing shifted is ≤ α, however often it is looked at. That is
    what lets a monitor judge a small, still-growing window early without raising false alarms.
    """
    from scipy.special import gammaln

    b = np.nan_to_num(np.asarray(baseline_counts, dtype=np.float64), nan=0.0)
    c = np.nan_to_num(np.asarray(current_counts, dtype=np.float64), nan=0.0)
    size = max(b.size, c.size)
    b, c = np.maximum(np.pad(b, (0, size - b.size)), 0.0), np.maximum(np.pad(c, (0, size - c.size)), 0.0)
    n = c.sum()
    if size < 2 or n <= 0 or b.sum() <= 0:
        return 0.0

    def log_predictive(alpha: np.ndarray) -> float:
        return float(gammaln(alpha.sum()) - gammaln(alpha.sum() + n) + np.sum(gammaln(alpha + c) - gammaln(alpha)))

    return log_predictive(np.full(size, prior)) - log_predictive(b + prior)


def category_counts(values: Iterable[Any], *, categories: Sequence[str] | None = None,
                    max_categories: int = 50, other: str = "<other>") -> tuple[dict[str, int], int]:
    """(counts per category, missing) of category keys (None = missing).

    Without ``categories`` the ``max_categories`` most frequent keys are kept and the rest pooled
    into ``other``. With them (a baseline's), every baseline category is listed (zeros included)
    and up to ``max_categories`` unseen ones are kept by name, the rest pooled into ``other``.
    """
    tally: dict[str, int] = {}
    missing = 0
    for v in values:
        if v is None:
            missing += 1
        else:
            tally[v] = tally.get(v, 0) + 1
    if categories is None:
        ranked = sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))
        counts = dict(ranked[:max_categories])
        rest = sum(n for _, n in ranked[max_categories:])
        if rest:
            counts[other] = counts.get(other, 0) + rest
        return counts, missing
    counts = {c: tally.pop(c, 0) for c in categories}
    unseen = sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))
    for k, n in unseen[:max_categories]:
        counts[k] = counts.get(k, 0) + n
    rest = sum(n for _, n in unseen[max_categories:])
    if rest:
        counts[other] = counts.get(other, 0) + rest
    return counts, missing


# --------------------------------------------------------------------------- MMD


def _subsample(x: np.ndarray, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    if x.shape[0] > max_rows:
        x = x[rng.choice(x.shape[0], size=max_rows, replace=False)]
    return x


def _as_matrix(x: Any) -> np.ndarray:
    """Rows × features float64 (1-D → one column, >2-D flattened per row), non-finite rows dropped."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0:
        return np.zeros((0, 1))
    if a.ndim == 1:
        a = a[:, None]
    elif a.ndim > 2:
        a = a.reshape(a.shape[0], int(np.prod(a.shape[1:])))
    return a[np.isfinite(a).all(axis=1)]


def mmd_test(x: Any, y: Any, *, seed: int = 0, max_rows: int = MMD_MAX_ROWS,
             permutations: int = MMD_PERMUTATIONS) -> tuple[float, float]:
    """Unbiased MMD² with an RBF kernel and a permutation p-value: (mmd², p-value).

    Bandwidth: the median heuristic, k(a, b) = exp(-|a - b|² / median pairwise |·|² of the pooled
    sample). Rows with NaN/inf are dropped; each side is subsampled to ``max_rows`` (seeded).
    p-value: (1 + #permutations ≥ observed) / (1 + permutations). When the observed value is
    beyond every permutation that fraction only says p ≤ 1/(P + 1); the tail is then estimated
    from a normal fit to the permutation distribution (never above 1/(P + 1)), so a
    Bonferroni-corrected threshold below 1/(P + 1) stays reachable for a clear shift.
    Fewer than 2 rows on a side, or mismatched dimensions → (0, 1).
    """
    rng = np.random.default_rng(seed)
    a, b = _as_matrix(x), _as_matrix(y)
    if a.shape[0] < 2 or b.shape[0] < 2 or a.shape[1] != b.shape[1] or a.shape[1] == 0:
        return 0.0, 1.0
    a, b = _subsample(a, max_rows, rng), _subsample(b, max_rows, rng)
    pooled = np.vstack([a, b])
    sq = np.sum(pooled * pooled, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * pooled @ pooled.T, 0.0)
    off_diag = d2[np.triu_indices(pooled.shape[0], k=1)]
    median = float(np.median(off_diag)) if off_diag.size else 0.0
    if not median > 0:
        return 0.0, 1.0  # every row identical: nothing to tell apart
    kernel = np.exp(-d2 / median)
    np.fill_diagonal(kernel, 0.0)  # unbiased estimator: no self-similarity terms
    n, m = a.shape[0], b.shape[0]
    total = kernel.sum()

    def mmd2(is_x: np.ndarray) -> np.ndarray:
        """MMD² for assignment columns (pooled rows × k) of 1.0 = "in x"."""
        kx = kernel @ is_x
        sxx = np.einsum("ik,ik->k", is_x, kx)
        sxy = kx.sum(axis=0) - sxx
        syy = total - sxx - 2.0 * sxy
        return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)

    observed_assign = np.zeros((n + m, 1))
    observed_assign[:n] = 1.0
    observed = float(mmd2(observed_assign)[0])
    perms = np.zeros((n + m, permutations))
    for k in range(permutations):
        perms[rng.permutation(n + m)[:n], k] = 1.0
    null = mmd2(perms)
    exceed = int(np.sum(null >= observed))
    p = (1 + exceed) / (1 + permutations)
    if exceed == 0:
        sd = float(null.std())
        tail = float(sstats.norm.sf((observed - float(null.mean())) / sd)) if sd > 0 else 0.0
        p = min(p, tail)
    return observed, float(p)
