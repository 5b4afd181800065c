"""The statistics of the paper's tables, as small pure functions (numpy only).

Data layout: a *stratified* sample is a list of 1-D arrays, one per environment (stratum), each holding one value
per seed (e.g. the student's score as a fraction of its teacher's). Curves use arrays of shape (seeds, points).

- `trimmed_mean(x, 0.25)` drops floor(0.25 * n) values at each end of the sorted sample (scipy.stats.trim_mean's
  rule, which rliable's IQM uses) and averages the rest; `iqm` is that with proportion 0.25.
- `geometric_iqm(x, eps)` = exp(trimmed_mean(log(max(x, eps)), 0.25)): the paper's aggregate of fractions of the
  teacher. Fractions <= eps (a student at or below zero while its teacher scored above zero) are clipped to eps
  before the log, so such a run counts as "eps of the teacher" instead of making the log undefined; with the
  25% trimming a few of them at the bottom do not move the estimate at all.
- `stratified_bootstrap(groups, statistic)`: 95% percentile interval from resamples that draw, within every
  environment independently, as many seeds (with replacement) as that environment has.
- `probability_of_improvement(x_groups, y_groups)`: P(X > Y) = the mean over environments of
  P(X_env > Y_env), each estimated from all pairs of one X seed and one Y seed of that environment, ties counting
  one half (the Mann-Whitney U statistic divided by n_x * n_y; Agarwal et al. 2021, "Deep RL at the edge of the
  statistical precipice"). Read: the chance that method X beats method Y on a random environment (uniformly) and a
  random seed of each.
"""

from typing import Callable, Sequence

import numpy as np

EPS = 1e-3  # fractions of the teacher at or below this are clipped to it before the log (geometric IQM)


def trimmed_mean(x, proportion: float = 0.25, axis: int = -1) -> np.ndarray:
    """Mean after dropping floor(proportion * n) of the smallest and of the largest values along `axis`."""
    x = np.sort(np.asarray(x, dtype=np.float64), axis=axis)
    n = x.shape[axis]
    if n == 0:
        raise ValueError("trimmed mean of an empty sample")
    k = int(proportion * n)
    return np.take(x, np.arange(k, n - k), axis=axis).mean(axis=axis)


def iqm(x, axis: int = -1) -> np.ndarray:
    """Interquartile mean: the 25%-trimmed mean."""
    return trimmed_mean(x, 0.25, axis)


def clip_fractions(x, eps: float = EPS) -> np.ndarray:
    """Fractions of the teacher with every value below eps raised to eps (the geometric IQM's domain)."""
    return np.maximum(np.asarray(x, dtype=np.float64), eps)


def geometric_iqm(x, eps: float = EPS, axis: int = -1) -> np.ndarray:
    """exp of the 25%-trimmed mean of log(max(x, eps))."""
    return np.exp(trimmed_mean(np.log(clip_fractions(x, eps)), 0.25, axis))


def _as_groups(groups: Sequence) -> list:
    out = [np.asarray(g, dtype=np.float64) for g in groups]
    out = [g for g in out if len(g)]
    if not out:
        raise ValueError("no data: every stratum is empty")
    return out


def stratified_resamples(groups: Sequence, n_resamples: int, seed: int = 0) -> np.ndarray:
    """Bootstrap resamples that keep the strata: shape (n_resamples, sum of n_k, ...). In every resample the
    first n_0 entries are drawn with replacement from groups[0], the next n_1 from groups[1], and so on."""
    groups = _as_groups(groups)
    rng = np.random.default_rng(seed)
    parts = [g[rng.integers(0, len(g), size=(n_resamples, len(g)))] for g in groups]
    return np.concatenate(parts, axis=1)


def stratified_bootstrap(groups: Sequence, statistic: Callable = geometric_iqm, n_resamples: int = 2000,
                         seed: int = 0, confidence: float = 0.95):
    """(point estimate, lower, upper) of `statistic` over the pooled strata, with a percentile interval from
    stratified resamples. `statistic(a)` reduces the last axis of `a` (the pooled runs). Strata may hold curves
    (shape (n_k, points)): the result is then per point."""
    groups = _as_groups(groups)
    point = statistic(np.moveaxis(np.concatenate(groups, axis=0), 0, -1))
    samples = stratified_resamples(groups, n_resamples, seed)  # (B, N, ...)
    values = statistic(np.moveaxis(samples, 1, -1))  # (B, ...)
    alpha = (1 - confidence) / 2
    lower, upper = np.quantile(values, [alpha, 1 - alpha], axis=0)
    return point, lower, upper


def _pairwise_win(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) over all pairs along the last axis of x and of y (ties count 1/2); leading axes broadcast."""
    diff = x[..., :, None] - y[..., None, :]
    return ((diff > 0) + 0.5 * (diff == 0)).mean(axis=(-2, -1))


def probability_of_improvement(x_groups: Sequence, y_groups: Sequence) -> float:
    """Mean over environments of P(X_env > Y_env) (all seed pairs, ties 1/2). x_groups[k] and y_groups[k] are the
    two methods' per-seed values in environment k; environments where either is empty are left out."""
    pairs = [(np.asarray(x, float), np.asarray(y, float)) for x, y in zip(x_groups, y_groups) if len(x) and len(y)]
    if not pairs:
        raise ValueError("no environment has runs of both methods")
    return float(np.mean([_pairwise_win(x, y) for x, y in pairs]))


def probability_of_improvement_ci(x_groups: Sequence, y_groups: Sequence, n_resamples: int = 2000, seed: int = 0,
                                  confidence: float = 0.95):
    """(P(X > Y), lower, upper): the percentile interval resamples the seeds of each method within each
    environment independently (stratified bootstrap)."""
    pairs = [(np.asarray(x, float), np.asarray(y, float)) for x, y in zip(x_groups, y_groups) if len(x) and len(y)]
    if not pairs:
        raise ValueError("no environment has runs of both methods")
    rng = np.random.default_rng(seed)
    per_env = []
    for x, y in pairs:
        xb = x[rng.integers(0, len(x), size=(n_resamples, len(x)))]
        yb = y[rng.integers(0, len(y), size=(n_resamples, len(y)))]
        per_env.append(_pairwise_win(xb, yb))
    values = np.mean(per_env, axis=0)
    alpha = (1 - confidence) / 2
    lower, upper = np.quantile(values, [alpha, 1 - alpha])
    return probability_of_improvement([p[0] for p in pairs], [p[1] for p in pairs]), float(lower), float(upper)


def mean_std(x) -> tuple:
    """(mean, sample standard deviation with ddof=1; 0 for a single value)."""
    x = np.asarray(x, dtype=np.float64)
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0


def curve_on_grid(steps, values, edges) -> np.ndarray:
    """A training curve on a common x grid: the mean of the values logged in each bin of `edges`, empty bins
    filled by linear interpolation between their neighbours (constant before the first and after the last)."""
    steps, values, edges = (np.asarray(a, dtype=np.float64) for a in (steps, values, edges))
    if len(steps) == 0:
        raise ValueError("empty curve")
    centers = (edges[1:] + edges[:-1]) / 2
    idx = np.clip(np.digitize(steps, edges) - 1, 0, len(centers) - 1)
    sums = np.bincount(idx, weights=values, minlength=len(centers))
    counts = np.bincount(idx, minlength=len(centers))
    full = counts > 0
    return np.interp(centers, centers[full], sums[full] / counts[full])


def first_crossing(x, y, threshold: float):
    """The first x whose y is >= threshold (None if none): when a binned curve first reaches a level."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    hits = np.flatnonzero(y >= threshold)
    return float(x[hits[0]]) if len(hits) else None
