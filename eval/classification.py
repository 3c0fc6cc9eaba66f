"""Classification: logistic regression on frozen embeddings, MTEB's few-shot protocol.

MTEB (mteb/abstasks/AbsTaskClassification.py, `_undersample_data`) runs 10 experiments. Before
each, the SAME index list (already shuffled by the earlier experiments) is shuffled again with a
fresh `np.random.RandomState(42)`, and the first `samples_per_label` indices of each label (in
shuffled order) form the training set. A `LogisticRegression(max_iter=100)` with scikit-learn's
defaults is fitted on their embeddings and predicts the whole test split; accuracy and macro F1
are averaged over the experiments.

The classifier here reproduces scikit-learn's objective (sklearn/linear_model/_logistic.py with
_linear_loss.py), lbfgs solver:
    minimise (1/n) * sum_i CE(x_i W + b, y_i) + (1 / (2 C n)) * ||W||^2,   C = 1,
multinomial softmax with one weight vector PER class when there are >= 3 classes; for 2 classes
the binomial (sigmoid) loss with ONE weight vector; intercept unpenalised; start at zero.
The optimiser is our own L-BFGS in float64 numpy (memory 10, H0 = (s'y / y'y) I, first step 1/||g||,
then 1, with a strong-Wolfe line search c1 = 1e-3, c2 = 0.9) and scipy's L-BFGS-B stopping rules
as scikit-learn sets them: max |grad| <= 1e-4, or relative decrease of f <= 64 * eps, or 100
iterations. scipy's Moré-Thuente line search is not reproduced step for step, so the iterates can
differ slightly: on the stored fixtures predictions agree with scikit-learn on >= 99% of test
items (tests/test_eval_metrics.py checks it).

Shapes: n = training rows, m = test rows, D = width, K = classes (1 weight column when K = 2).
"""
import numpy as np

from .sts import to_numpy


def undersample_experiments(train_labels, samples_per_label: int, n_experiments: int = 10,
                            seed: int = 42) -> list[np.ndarray]:
    labels = np.asarray(train_labels.detach().cpu() if hasattr(train_labels, "detach") else train_labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"train_labels must be a non-empty 1-D sequence, got shape {labels.shape}")
    if samples_per_label < 1 or n_experiments < 1:
        raise ValueError(f"samples_per_label and n_experiments must be >= 1, got "
                         f"{samples_per_label}, {n_experiments}")
    order = list(range(len(labels)))  # a list, as in MTEB, shuffled in place experiment after experiment
    experiments = []
    for _ in range(n_experiments):
        np.random.RandomState(seed).shuffle(order)  # a FRESH RandomState each time (MTEB)
        taken: dict = {}
        chosen = []
        for i in order:
            if taken.get(labels[i], 0) < samples_per_label:
                chosen.append(i)
                taken[labels[i]] = taken.get(labels[i], 0) + 1
        experiments.append(np.array(chosen, dtype=np.int64))
    return experiments


def _loss_and_grad(w: np.ndarray, x: np.ndarray, y: np.ndarray, n_classes: int, C: float):
    # w: (D+1, K') with the intercept in the last row; K' = 1 (binomial) or K (multinomial).
    n = x.shape[0]
    logits = x @ w[:-1] + w[-1]  # (n, K')
    if n_classes == 2:
        # binomial: log(1 + exp(z)) - y z with y in {0, 1}; d/dz = sigmoid(z) - y
        z = logits[:, 0]  # (n,)
        data = np.logaddexp(0.0, z) - y * z  # (n,)
        residual = (1.0 / (1.0 + np.exp(-z)) - y)[:, None]  # (n, 1)
    else:
        # multinomial: logsumexp(z) - z_y; d/dz = softmax(z) - onehot(y)
        shifted = logits - logits.max(axis=1, keepdims=True)  # (n, K)
        log_norm = np.log(np.exp(shifted).sum(axis=1))  # (n,)
        data = log_norm - shifted[np.arange(n), y]  # (n,)
        residual = np.exp(shifted - log_norm[:, None])  # (n, K) softmax
        residual[np.arange(n), y] -= 1.0
    coef = w[:-1]  # (D, K') the intercept row is not penalised
    loss = data.sum() / n + (coef ** 2).sum() / (2.0 * C * n)
    grad = np.vstack([x.T @ residual / n + coef / (C * n), residual.sum(axis=0, keepdims=True) / n])
    return float(loss), grad  # grad: (D+1, K')


def _line_search(f_and_g, w, f0, g0, d, step, c1=1e-3, c2=0.9, max_evals=30):
    # Strong-Wolfe conditions by bracketing + bisection: too long (no sufficient decrease, or the
    # slope turned positive) shrinks the bracket from above, too short from below. Enough for a
    # smooth convex loss; on failure take no step (the caller then stops on "no decrease").
    slope0 = float((g0 * d).sum())
    lo, hi = 0.0, float("inf")
    for _ in range(max_evals):
        f, g = f_and_g(w + step * d)
        slope = float((g * d).sum())
        if f > f0 + c1 * step * slope0 or slope > -c2 * slope0:
            hi = step
        elif slope < c2 * slope0:
            lo = step
        else:
            return step, f, g
        step = 2.0 * step if hi == float("inf") else 0.5 * (lo + hi)
    return 0.0, f0, g0


def fit_logistic_regression(x: np.ndarray, y_index: np.ndarray, n_classes: int, *, C: float = 1.0,
                            max_iter: int = 100, gtol: float = 1e-4, memory: int = 10) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)  # (n, D)
    y_index = np.asarray(y_index, dtype=np.int64)  # (n,)
    n_cols = 1 if n_classes == 2 else n_classes
    w = np.zeros((x.shape[1] + 1, n_cols))  # (D+1, K')

    def f_and_g(v):
        return _loss_and_grad(v, x, y_index, n_classes, C)

    f, g = f_and_g(w)
    s_hist, y_hist = [], []
    ftol = 64 * np.finfo(np.float64).eps  # scikit-learn's setting for scipy's L-BFGS-B
    for it in range(max_iter):
        if float(np.abs(g).max()) <= gtol:
            break
        # two-loop recursion: d = -H g
        q = g.copy()
        alphas = []
        for s, yv in reversed(list(zip(s_hist, y_hist))):
            a = float((s * q).sum()) / float((yv * s).sum())
            alphas.append(a)
            q -= a * yv
        if s_hist:
            q *= float((s_hist[-1] * y_hist[-1]).sum()) / float((y_hist[-1] ** 2).sum())
        for (s, yv), a in zip(zip(s_hist, y_hist), reversed(alphas)):
            b = float((yv * q).sum()) / float((yv * s).sum())
            q += (a - b) * s
        d = -q
        step = 1.0 / float(np.linalg.norm(g)) if it == 0 else 1.0
        step, f_new, g_new = _line_search(f_and_g, w, f, g, d, step)
        s, yv = step * d, g_new - g
        if float((s * yv).sum()) > 1e-10 * float((yv ** 2).sum()):  # keep curvature positive
            s_hist.append(s)
            y_hist.append(yv)
            s_hist, y_hist = s_hist[-memory:], y_hist[-memory:]
        w = w + s
        done = (f - f_new) / max(abs(f), abs(f_new), 1.0) <= ftol
        f, g = f_new, g_new
        if done:
            break
    return w


def predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    logits = x @ w[:-1] + w[-1]  # (m, K')
    if w.shape[1] == 1:
        return (logits[:, 0] > 0).astype(np.int64)  # scikit-learn: class 1 iff decision > 0
    return logits.argmax(axis=1)  # (m,) first class wins an exact tie, as np.argmax in sklearn


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    # scikit-learn's f1_score(average="macro"): over labels seen in y_true OR y_pred, 0 when undefined
    scores = []
    for c in np.union1d(y_true, y_pred):
        tp = int(((y_pred == c) & (y_true == c)).sum())
        fp = int(((y_pred == c) & (y_true != c)).sum())
        fn = int(((y_pred != c) & (y_true == c)).sum())
        scores.append(2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0)
    return float(np.mean(scores))


def score_classification(train_emb, train_labels, test_emb, test_labels,
                         experiments: list[np.ndarray]) -> dict:
    x_train = to_numpy(train_emb)  # (N_train, D)
    x_test = to_numpy(test_emb)  # (m, D)
    y_train = np.asarray(train_labels.detach().cpu() if hasattr(train_labels, "detach") else train_labels)
    y_test = np.asarray(test_labels.detach().cpu() if hasattr(test_labels, "detach") else test_labels)
    if x_train.ndim != 2 or x_test.ndim != 2 or x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"train_emb {x_train.shape} and test_emb {x_test.shape} must be (rows, D), same D")
    if len(y_train) != len(x_train) or len(y_test) != len(x_test):
        raise ValueError(f"labels ({len(y_train)}, {len(y_test)}) do not match embedding rows "
                         f"({len(x_train)}, {len(x_test)})")
    if not experiments:
        raise ValueError("experiments is empty")
    if not np.isfinite(x_test).all():
        raise ValueError("test_emb contains NaN or inf")

    accuracies, f1s = [], []
    correct = np.zeros(len(y_test), dtype=np.float64)  # (m,) experiments that got item i right
    for j, idx in enumerate(experiments):
        idx = np.asarray(idx, dtype=np.int64)
        if idx.min() < 0 or idx.max() >= len(x_train):
            raise ValueError(f"experiment {j} indexes outside the train set of {len(x_train)} rows")
        x = x_train[idx]  # (n, D) only these rows are guaranteed encoded
        if not np.isfinite(x).all():
            raise ValueError(f"experiment {j}: train_emb rows used for training contain NaN or inf")
        classes, y_index = np.unique(y_train[idx], return_inverse=True)  # sklearn's classes_
        if len(classes) < 2:
            raise ValueError(f"experiment {j} has a single class {classes.tolist()}")
        w = fit_logistic_regression(x, y_index, len(classes))
        pred = classes[predict(w, x_test)]  # (m,)
        hit = pred == y_test
        correct += hit
        accuracies.append(float(hit.mean()))
        f1s.append(macro_f1(y_test, pred))
    return {
        "main_score": float(np.mean(accuracies)),
        "accuracy": float(np.mean(accuracies)),
        "f1": float(np.mean(f1s)),
        "accuracy_per_experiment": accuracies,
        "f1_per_experiment": f1s,
        "n_items": int(len(y_test)),
        "per_item": {"kind": "mean", "values": (correct / len(experiments)).tolist()},
    }
