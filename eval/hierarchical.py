"""A comparison's effect on one family, with a confidence interval that counts seeds AND items.

Effect = family average of A minus family average of B (the family average: the mean over the
family's datasets of the main score), averaged over the seeds both configurations share. Two
sources of noise sit in it: which seed trained the model (data order, LoRA init, dropout), and
which items the quick suite happened to sample. A per-item test sees only the second, a test
over seeds only the first.

Hierarchical bootstrap, paired at both levels (Davison & Hinkley 1997, sec. 3.8 on hierarchical
data; the "resample seeds, then items" scheme of Saravanan et al. 2020 for neuroscience):
  1. draw S seeds with replacement from the S shared seeds;
  2. for each drawn seed and each dataset, draw that dataset's n items with replacement, the
     SAME indices for A and B (at one seed both were scored on the same items, and configurations
     at one seed share their training data order, so the pairing carries the seed's common part);
  3. recompute each dataset's statistic from the resampled items as its main score is computed
     (eval.stats: the mean of per-item scores for retrieval, classification and clustering; the
     Spearman of the resampled pairs for STS), take A minus B, and average over datasets and
     drawn seeds.
Percentile intervals of the resampled effects: 95% for "is there a difference", 90% for the two
one-sided tests of equivalence (eval.verdict). With 2-3 seeds the seed stage has few distinct
draws and cannot see more seed-to-seed variance than the seeds showed; re-drawing items inside a
drawn seed adds some back. Read the interval at 3 seeds as a lower bound on the uncertainty.

Bootstrap p-values, the inversion of those percentile intervals: two-sided
p = min(1, 2 * min(1 + #{T* <= 0}, 1 + #{T* >= 0}) / (1 + R)); one-sided against a margin m,
p_low = (1 + #{T* <= -m}) / (1 + R) and p_high = (1 + #{T* >= m}) / (1 + R).

Vectorised: every drawn seed slot gets its own item draw, so R x S item resamples per dataset in
all; they are computed seed by seed, a block of rows at a time (eval.stats.resampled_diffs).
"""
from __future__ import annotations

import numpy as np

from .sts import average_ranks, pearson
from .stats import paired_arrays, resampled_diffs

N_RESAMPLES = 4000  # the 2.5% tail then rests on ~100 resamples


def _observed(kind, a, b, gold, stat) -> float:
    return float(stat(a[None], b[None], gold[None])[0])


def family_effect(runs_a: list[dict], runs_b: list[dict], datasets: list[str], *,
                  n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """runs_a[s] and runs_b[s]: the results.json of A and B at the same seed (eval.report.matched_seeds).
    Raises ValueError when a dataset lacks per-item scores or A and B were scored on other items."""
    S, D = len(runs_a), len(datasets)
    if S == 0 or S != len(runs_b) or D == 0:
        raise ValueError(f"need seed-matched runs and datasets, got {len(runs_a)} and {len(runs_b)} runs, {D} datasets")
    cells = []  # cells[s][d] = (kind, a, b, gold, stat) of dataset d at seed s
    for ra, rb in zip(runs_a, runs_b):
        row = []
        for name in datasets:
            ta, tb = ra["tasks"][name], rb["tasks"][name]
            cell = paired_arrays(ta, tb)
            kind, a, b, gold, _ = cell
            # The per-item scores must give back the stored main scores, or the resamples measure
            # something other than the table.
            for x, res in ((a, ta), (b, tb)):
                own = _main_score(kind, x, gold)
                if abs(own - float(res["main_score"])) > 1e-6:
                    raise ValueError(f"{name}: per-item scores give {own:.6f}, the stored main score is "
                                     f"{float(res['main_score']):.6f}")
            row.append(cell)
        cells.append(row)
    per_seed = np.array([[_observed(*c) for c in row] for row in cells])  # (S, D) A minus B
    effect = float(per_seed.mean())

    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, S, size=(n_resamples, S))  # (R, S) seed drawn into each slot
    total = np.zeros(n_resamples)  # (R,) sum over slots and datasets of resampled A minus B
    for s in range(S):
        owner = np.nonzero(drawn == s)[0]  # (M,) the resample each slot drawing seed s belongs to
        for cell in cells[s]:
            np.add.at(total, owner, resampled_diffs(*cell[1:], len(owner), rng))
    boot = total / (S * D)  # (R,)
    boot = boot[np.isfinite(boot)]  # a resample with constant predictions has no correlation
    if len(boot) < n_resamples // 2:
        raise ValueError(f"only {len(boot)} of {n_resamples} resamples are defined (too few items?)")
    ci95 = np.percentile(boot, [2.5, 97.5])
    ci90 = np.percentile(boot, [5.0, 95.0])
    r = len(boot)
    p_two = min(1.0, 2.0 * min(1 + int((boot <= 0).sum()), 1 + int((boot >= 0).sum())) / (1 + r))
    return {
        "effect": effect,
        "per_seed": per_seed.mean(axis=1).tolist(),
        "ci95": [float(ci95[0]), float(ci95[1])],
        "ci90": [float(ci90[0]), float(ci90[1])],
        "p_value": p_two,
        "boot": boot,
        "n_resamples": r,
        "n_items": {name: len(cells[0][d][1]) for d, name in enumerate(datasets)},
    }


def _main_score(kind: str, x: np.ndarray, gold: np.ndarray) -> float:
    return float(x.mean()) if kind == "mean" else pearson(average_ranks(x), average_ranks(gold))  # codes: ranks x 2


def one_sided_p(boot: np.ndarray, margin: float) -> tuple[float, float]:
    """(p for H0 effect <= -margin, p for H0 effect >= +margin) from the resampled effects."""
    r = len(boot)
    return (1 + int((boot <= -margin).sum())) / (1 + r), (1 + int((boot >= margin).sum())) / (1 + r)
