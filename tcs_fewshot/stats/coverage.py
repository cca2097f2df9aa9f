"""Coverage of CIs on simulated benchmarks whose true mean accuracy is known.

The generative model (all draws seeded):

- A population of classes: class c has a latent difficulty ``d_c ~ N(0, tau^2)`` (logit scale) and a
  position ``z_c ~ N(0, I_2)``; two classes close together are confused (``gamma``).
- A benchmark draws its C test classes from that population; its T tasks are N-way class subsets of
  them, drawn uniformly.
- In a task, class c is recognised with probability
  ``sigmoid(mu + d_c + u_t - gamma * sum_{j in task, j != c} exp(-|z_c - z_j|^2))`` (``u_t ~ N(0,
  sigma_u^2)`` the luck of the support draw), and each of its Q queries is right with that
  probability (binomial): the task's accuracy is the share of its N Q queries answered right.
- The true value is the population's expected task accuracy, by Monte Carlo over fresh classes
  and tasks (2,000,000 tasks: its standard error is about 0.01 points).

For each benchmark, each interval (``INTERVALS``) either covers the true value or not;
:func:`simulate_coverage` reports the share that covers and the mean width.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.special import expit

from tcs_fewshot.stats.class_ci import two_level_ci

INTERVALS = ("tasks", "classes, two-level", "classes, bootstrap (product weights)", "classes, bootstrap (redraw tasks)")


@dataclass(frozen=True)
class Population:
    """The class population and task model (see the module docstring); accuracy units are shares."""

    mu: float = 1.0
    tau: float = 0.5
    sigma_u: float = 0.3
    gamma: float = 1.0
    ways: int = 5
    queries: int = 15

    def classes(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(n,)`` difficulties and ``(n, 2)`` positions of ``n`` fresh classes."""
        return rng.normal(0.0, self.tau, n), rng.normal(size=(n, 2))

    def recognised(self, rng: np.random.Generator, difficulty: np.ndarray, position: np.ndarray) -> np.ndarray:
        """``(T, N)`` probabilities for tasks given as ``(T, N)`` difficulties and ``(T, N, 2)`` positions."""
        distance = ((position[:, :, None] - position[:, None]) ** 2).sum(-1)
        confusion = np.exp(-distance).sum(-1) - 1.0  # minus the class itself (distance 0)
        luck = rng.normal(0.0, self.sigma_u, (len(difficulty), 1))
        return expit(self.mu + difficulty + luck - self.gamma * confusion)

    def true_accuracy(self, n_tasks: int = 2_000_000, seed: int = 12345) -> float:
        """The expected accuracy (share) of a task of fresh classes, by Monte Carlo."""
        rng = np.random.default_rng(seed)
        total, chunk = 0.0, 200_000
        for start in range(0, n_tasks, chunk):
            size = min(chunk, n_tasks - start)
            difficulty, position = self.classes(rng, size * self.ways)
            shape = (size, self.ways)
            total += self.recognised(rng, difficulty.reshape(shape), position.reshape(*shape, 2)).mean(-1).sum()
        return total / n_tasks


def simulate_benchmark(population: Population, rng: np.random.Generator, n_classes: int,
                       n_tasks: int) -> tuple[np.ndarray, np.ndarray]:
    """One benchmark: ``(T,)`` task accuracies (percent) and ``(T, N)`` class indices in ``0..C-1``."""
    difficulty, position = population.classes(rng, n_classes)
    chosen = np.argsort(rng.random((n_tasks, n_classes)), axis=1)[:, :population.ways]
    probability = population.recognised(rng, difficulty[chosen], position[chosen])
    correct = rng.binomial(population.queries, probability).sum(-1)
    return 100.0 * correct / (population.queries * population.ways), chosen


def product_weights(rng: np.random.Generator, chosen: np.ndarray, n_classes: int, resamples: int) -> np.ndarray:
    """``(B, T)`` weights of a class bootstrap: redraw the C classes with replacement; a task weighs the
    product of its classes' counts (0 when one was not drawn). Resamples leaving no task are redrawn."""
    kept: list[np.ndarray] = []
    while sum(len(k) for k in kept) < resamples:
        counts = rng.multinomial(n_classes, np.full(n_classes, 1.0 / n_classes), size=resamples)
        weights = counts[:, chosen].prod(-1).astype(float)
        kept.append(weights[weights.sum(1) > 0])
    return np.concatenate(kept)[:resamples]


def intervals(values: np.ndarray, chosen: np.ndarray, n_classes: int, rng: np.random.Generator,
              resamples: int = 1000, confidence: float = 0.95) -> dict[str, tuple[float, float]]:
    """``{name: (low, high)}`` for each of ``INTERVALS`` on one benchmark's task values."""
    mean, n = values.mean(), len(values)
    half = 1.959964 * values.std(ddof=1) / np.sqrt(n)
    found = two_level_ci(values, [tuple(map(str, row)) for row in chosen], confidence)
    weights = product_weights(rng, chosen, n_classes, resamples)
    weighted = weights @ values / weights.sum(1)
    # Redraw T tasks per resample from the stored ones, in proportion to their weights.
    redrawn = rng.multinomial(n, weights / weights.sum(1, keepdims=True)) @ values / n
    tail = 50 * (1 - confidence)
    return {
        INTERVALS[0]: (mean - half, mean + half),
        INTERVALS[1]: (found["low"], found["high"]),
        INTERVALS[2]: tuple(np.percentile(weighted, [tail, 100 - tail])),
        INTERVALS[3]: tuple(np.percentile(redrawn, [tail, 100 - tail])),
    }


def simulate_coverage(population: Population = Population(), n_classes: int = 9, n_tasks: int = 600,
                      n_benchmarks: int = 200, resamples: int = 1000, seed: int = 0,
                      truth: float | None = None) -> pd.DataFrame:
    """Coverage of each interval over ``n_benchmarks`` simulated benchmarks.

    Args:
        population: The generative model.
        n_classes, n_tasks: C test classes per benchmark and T tasks on them.
        n_benchmarks: Simulated benchmarks; each interval covers the truth on some share of them.
        resamples: Class resamples of the bootstraps.
        seed: Everything random derives from it.
        truth: The true accuracy in percent (default: :meth:`Population.true_accuracy`).

    Returns:
        One row per interval: ``interval``, ``coverage`` (share), ``mean_width`` (points), the
        ``truth`` (percent), ``n_classes``, ``n_tasks``, ``n_benchmarks`` and the population's fields.
    """
    truth = 100.0 * population.true_accuracy() if truth is None else truth
    rng = np.random.default_rng(seed)
    covered = {name: [] for name in INTERVALS}
    widths = {name: [] for name in INTERVALS}
    for _ in range(n_benchmarks):
        values, chosen = simulate_benchmark(population, rng, n_classes, n_tasks)
        for name, (low, high) in intervals(values, chosen, n_classes, rng, resamples).items():
            covered[name].append(low <= truth <= high)
            widths[name].append(high - low)
    return pd.DataFrame([
        dict(interval=name, coverage=float(np.mean(covered[name])), mean_width=float(np.mean(widths[name])),
             truth=truth, n_classes=n_classes, n_tasks=n_tasks, n_benchmarks=n_benchmarks, **asdict(population))
        for name in INTERVALS
    ])
