"""Chance level of a clustering score: the expected V-measure of a random partition.

A V-measure means little without its floor: 20 classes of 8 texts, clustered at random into 20
groups of 8, already score about 0.37, because V-measure is not adjusted for chance.

V-measure is mutual information over the mean of the two entropies: with h = I/H(C) and
c = I/H(K), V = 2hc / (h + c) = 2I / (H(C) + H(K)). Shuffling the gold labels against the
predicted clusters keeps both sets of cluster sizes, so both entropies stay fixed and only I
varies: E[V] = 2 E[I] / (H(C) + H(K)). E[I] under that permutation (hypergeometric) model has a
closed form (Vinh, Epps & Bailey 2010, eq. 24a; scikit-learn's `expected_mutual_information`,
sklearn/metrics/cluster/_expected_mutual_info_fast.pyx, used by adjusted_mutual_info_score):

  E[I] = sum_i sum_j sum_{n_ij} n_ij/N log(N n_ij / (a_i b_j))
         * a_i! b_j! (N-a_i)! (N-b_j)! / (N! n_ij! (a_i-n_ij)! (b_j-n_ij)! (N-a_i-b_j+n_ij)!)

over max(1, a_i + b_j - N) <= n_ij <= min(a_i, b_j), with a = class sizes, b = cluster sizes.
Natural log, as v_measure. Degenerate sizes follow v_measure's conventions: one class and one
cluster score 1, one of the two alone scores 0.

Shapes: I = classes, J = clusters, M = the largest possible overlap min(max a, max b).
"""
import numpy as np


def _entropy(sizes: np.ndarray) -> float:
    p = sizes[sizes > 0] / sizes.sum()
    return float(-(p * np.log(p)).sum())


def expected_mutual_information(class_sizes, cluster_sizes) -> float:
    a = np.asarray(class_sizes, dtype=np.int64)
    b = np.asarray(cluster_sizes, dtype=np.int64)
    a, b = a[a > 0], b[b > 0]
    n = int(a.sum())
    if n != int(b.sum()) or n == 0:
        raise ValueError(f"class sizes sum to {int(a.sum())} but cluster sizes to {int(b.sum())}; "
                         "both must count the same, non-zero number of points")
    log_fact = np.concatenate(([0.0], np.cumsum(np.log(np.arange(1, n + 1)))))  # (N+1,) log k!
    nij = np.arange(1, min(a.max(), b.max()) + 1)[None, None, :]  # (1, 1, M) candidate overlaps
    ai, bj = a[:, None, None], b[None, :, None]  # (I, 1, 1), (1, J, 1)
    valid = (nij >= np.maximum(1, ai + bj - n)) & (nij <= np.minimum(ai, bj))  # (I, J, M)
    safe = lambda x: np.clip(x, 0, n)  # noqa: E731 - keeps the table lookups in range where not valid
    log_p = (log_fact[ai] + log_fact[bj] + log_fact[n - ai] + log_fact[n - bj] - log_fact[n]
             - log_fact[safe(nij)] - log_fact[safe(ai - nij)] - log_fact[safe(bj - nij)]
             - log_fact[safe(n - ai - bj + nij)])  # (I, J, M) log P(n_ij) under the hypergeometric
    term = nij / n * np.log(n * nij / (ai * bj)) * np.exp(np.where(valid, log_p, -np.inf))  # (I, J, M)
    return float(term.sum())


def expected_v_measure(class_sizes, cluster_sizes) -> float:
    a = np.asarray(class_sizes, dtype=np.float64)
    b = np.asarray(cluster_sizes, dtype=np.float64)
    h_c, h_k = _entropy(a), _entropy(b)
    if h_c + h_k == 0:
        return 1.0  # one class, one cluster: v_measure's h = c = 1
    return 2.0 * expected_mutual_information(class_sizes, cluster_sizes) / (h_c + h_k)


def chance_v_measure(labels_true, labels_pred) -> float:
    """Expected V-measure of labels_pred's cluster sizes filled at random, against labels_true."""
    t, p = np.asarray(labels_true), np.asarray(labels_pred)
    if t.ndim != 1 or t.shape != p.shape:
        raise ValueError(f"labels_true {t.shape} and labels_pred {p.shape} must be 1-D, same length")
    return expected_v_measure(np.unique(t, return_counts=True)[1], np.unique(p, return_counts=True)[1])
