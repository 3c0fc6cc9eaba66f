"""Clustering: k-means on embeddings, scored by V-measure (MTEB's clustering evaluator).

MTEB (mteb/evaluation/evaluators/clustering_evaluator.py) clusters each "set" of texts with
scikit-learn's MiniBatchKMeans (k = number of distinct gold labels in the set, batch 500, one
k-means++ init, seed 42) and reports the V-measure averaged over sets.

Deviation, on purpose: we run FULL-BATCH k-means (Lloyd iterations) instead of MiniBatchKMeans.
It is deterministic for a seed and at least as good a local optimum, but it is not the same
random process, so scores can differ from MTEB's by about a point. The init is k-means++ with
scikit-learn's greedy variant (2 + floor(ln k) candidate centres per step, keep the one that
lowers the potential most; sklearn/cluster/_kmeans.py `_kmeans_plusplus`). Convergence as in
scikit-learn's KMeans: stop when the total squared centre shift <= tol * mean feature variance.
An empty cluster is re-seeded at the point farthest from its centre.

V-measure (Rosenberg & Hirschberg 2007; sklearn.metrics.v_measure_score, beta = 1): natural log,
h = I(C;K) / H(C), c = I(C;K) / H(K), V = 2hc / (h + c); H(C) = 0 -> h = 1, H(K) = 0 -> c = 1,
h + c = 0 -> V = 0.

Each set's chance level (eval.chance: the expected V-measure of a random partition with the
predicted cluster sizes) is stored beside its score, since V-measure is not adjusted for chance.

Shapes: n = points in a set, D = width, k = clusters.
"""
import numpy as np

from .chance import chance_v_measure
from .sts import to_numpy


def _sq_dists(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    # ||x||^2 - 2 x.c + ||c||^2, clipped at 0 against rounding
    d = (x * x).sum(1)[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(1)[None, :]  # (n, k)
    return np.maximum(d, 0.0)


def kmeans_plusplus(x: np.ndarray, k: int, rng: np.random.RandomState) -> np.ndarray:
    n = len(x)
    trials = 2 + int(np.log(k))
    centres = [x[rng.randint(n)]]
    closest = _sq_dists(x, centres[0][None])[:, 0]  # (n,) squared distance to nearest centre
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # all points coincide with a centre already: any point will do
            centres.append(x[rng.randint(n)])
            continue
        # sample candidates proportionally to D^2, keep the one with the smallest new potential
        cand = np.searchsorted(np.cumsum(closest), rng.uniform(size=trials) * total)
        cand = np.minimum(cand, n - 1)  # (trials,)
        new_closest = np.minimum(closest[None, :], _sq_dists(x, x[cand]).T)  # (trials, n)
        best = int(np.argmin(new_closest.sum(1)))
        centres.append(x[cand[best]])
        closest = new_closest[best]
    return np.stack(centres)  # (k, D)


def kmeans(x, k: int, *, seed: int = 42, max_iter: int = 300, tol: float = 1e-4) -> np.ndarray:
    x = to_numpy(x)  # (n, D)
    if x.ndim != 2:
        raise ValueError(f"kmeans expects (n, D) points, got shape {x.shape}")
    if not 1 <= k <= len(x):
        raise ValueError(f"k must be in 1..{len(x)} (number of points), got {k}")
    if not np.isfinite(x).all():
        raise ValueError("kmeans input contains NaN or inf")
    rng = np.random.RandomState(seed)
    centres = kmeans_plusplus(x, k, rng)  # (k, D)
    threshold = tol * x.var(axis=0).mean()  # scikit-learn scales tol by the data's variance
    for _ in range(max_iter):
        dist = _sq_dists(x, centres)  # (n, k)
        assign = dist.argmin(1)  # (n,)
        new = np.zeros_like(centres)
        np.add.at(new, assign, x)  # (k, D) sums per cluster
        counts = np.bincount(assign, minlength=k)  # (k,)
        for c in np.flatnonzero(counts == 0):
            far = int(dist[np.arange(len(x)), assign].argmax())
            new[c], counts[c] = x[far], 1
            dist[far, assign[far]] = 0.0  # do not pick the same point twice
        new /= counts[:, None]
        shift = ((new - centres) ** 2).sum()
        centres = new
        if shift <= threshold:
            break
    return _sq_dists(x, centres).argmin(1)  # (n,) labels of the final centres


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def v_measure(labels_true, labels_pred) -> float:
    t = np.asarray(labels_true)
    p = np.asarray(labels_pred)
    if t.ndim != 1 or t.shape != p.shape:
        raise ValueError(f"labels_true {t.shape} and labels_pred {p.shape} must be 1-D, same length")
    if len(t) == 0:
        return 1.0  # scikit-learn's convention for empty labelings
    _, ti = np.unique(t, return_inverse=True)
    _, pi = np.unique(p, return_inverse=True)
    joint = np.zeros((ti.max() + 1, pi.max() + 1))  # (classes, clusters) contingency table
    np.add.at(joint, (ti, pi), 1.0)
    n = len(t)
    h_c, h_k = _entropy(joint.sum(1)), _entropy(joint.sum(0))
    nz = joint > 0
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)  # (classes, clusters)
    mutual = float((joint[nz] / n * np.log(joint[nz] * n / outer[nz])).sum())
    h = 1.0 if h_c == 0 else mutual / h_c
    c = 1.0 if h_k == 0 else mutual / h_k
    return 0.0 if h + c == 0 else 2.0 * h * c / (h + c)


def score_clustering(emb, labels, sets: list[np.ndarray], *, seed: int = 42) -> dict:
    x = to_numpy(emb)  # (N, D)
    y = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels)
    if len(y) != len(x):
        raise ValueError(f"{len(y)} labels for {len(x)} embeddings")
    if not sets:
        raise ValueError("sets is empty")
    scores, chance = [], []
    for j, idx in enumerate(sets):
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) == 0 or idx.min() < 0 or idx.max() >= len(x):
            raise ValueError(f"set {j} is empty or indexes outside the {len(x)} embeddings")
        k = len(np.unique(y[idx]))
        predicted = kmeans(x[idx], k, seed=seed)  # (n,)
        scores.append(v_measure(y[idx], predicted))
        chance.append(chance_v_measure(y[idx], predicted))
    return {
        "main_score": float(np.mean(scores)),
        "v_measures": scores,
        "chance_level": float(np.mean(chance)),
        "chance_v_measures": chance,
        "n_items": len(scores),
        "per_item": {"kind": "mean", "values": scores},
    }
