"""STS: correlate embedding similarity with gold similarity (MTEB's STS evaluator).

MTEB (mteb/evaluation/evaluators/sts_evaluator.py) scores a pair by the cosine of its two
embeddings and reports the Spearman correlation with the gold score as the main score; it also
reports Pearson of the cosine and Spearman of the NEGATED Manhattan / Euclidean distances
(a smaller distance means "more similar", so the sign keeps all correlations positive).

Spearman is the Pearson correlation of AVERAGE ranks: gold scores tie a lot (STS-B has many
pairs at exactly 2.0, 3.0 ...), and tied values must share the mean of the ranks they span,
as scipy.stats.spearmanr does. Rescaling gold to 0..1 changes nothing (ranks are invariant).

Shapes: N = number of pairs, D = embedding width.
"""
import numpy as np


def to_numpy(x, dtype=np.float64) -> np.ndarray:
    # Accept torch tensors (any float dtype, bf16 included) or array-likes, without importing torch.
    # The one converter of eval/: the scorers compute in float64, eval/tasks.py stores in float32.
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=dtype)


def average_ranks(x: np.ndarray) -> np.ndarray:
    # 1-based ranks; every run of equal values gets the mean of the ranks it covers.
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")  # (N,)
    sorted_x = x[order]
    # start of each run of equal values in sorted order
    new_run = np.concatenate(([True], sorted_x[1:] != sorted_x[:-1]))  # (N,)
    run_id = np.cumsum(new_run) - 1  # (N,) run index per sorted position
    starts = np.flatnonzero(new_run)  # (R,)
    ends = np.concatenate((starts[1:], [len(x)]))  # (R,) exclusive
    mean_rank = (starts + 1 + ends) / 2.0  # (R,) mean of ranks starts+1 .. ends
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = mean_rank[run_id]
    return ranks


def pearson(x, y) -> float:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt((xc * xc).sum() * (yc * yc).sum())
    # a constant input has no defined correlation (scipy returns nan too)
    return float((xc * yc).sum() / denom) if denom > 0 else float("nan")


def spearman(x, y) -> float:
    return pearson(average_ranks(x), average_ranks(y))


def score_sts(emb1, emb2, gold) -> dict:
    a = to_numpy(emb1)  # (N, D)
    b = to_numpy(emb2)  # (N, D)
    g = to_numpy(gold).reshape(-1)  # (N,)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"emb1 and emb2 must be (N, D) of the same shape, got {a.shape} and {b.shape}")
    if len(g) != len(a):
        raise ValueError(f"gold has {len(g)} scores but there are {len(a)} pairs")
    if len(g) < 2:
        raise ValueError(f"STS needs at least 2 pairs, got {len(g)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all() and np.isfinite(g).all()):
        raise ValueError("STS inputs contain NaN or inf")

    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)  # (N,)
    if (norms == 0).any():
        raise ValueError(f"zero-norm embedding in pair(s) {np.flatnonzero(norms == 0)[:5].tolist()}")
    cosine = (a * b).sum(axis=1) / norms  # (N,)
    manhattan = np.abs(a - b).sum(axis=1)  # (N,)
    euclidean = np.sqrt(((a - b) ** 2).sum(axis=1))  # (N,)

    cosine_spearman = spearman(cosine, g)
    return {
        "main_score": cosine_spearman,
        "cosine_spearman": cosine_spearman,
        "cosine_pearson": pearson(cosine, g),
        "manhattan_spearman": spearman(-manhattan, g),
        "euclidean_spearman": spearman(-euclidean, g),
        "n_items": int(len(g)),
        "per_item": {"kind": "spearman", "pred": cosine.tolist(), "gold": g.tolist()},
    }
