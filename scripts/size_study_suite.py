"""Size the study suite from measured variance: the committed quick-suite runs' W on/off pairs.

For every (W on, W off) pair at one seed (all 30, middle 4 and last 4 blocks; seeds 0-2 of
results/cpu-study), each dataset's paired bootstrap SE of the difference (eval.stats.paired_test),
combined into the family average's SE (datasets independent: sqrt(sum se^2) / K), then scaled to
another item count as 1/sqrt(n). The seed-to-seed SD of the family difference is measured over the
same pairs. A suite is large enough when, at 3 seeds, the 95% half-width
1.96 * sqrt((seed_sd^2 + item_se^2) / 3) is <= 0.01 in every family.

    python scripts/size_study_suite.py [--runs results/cpu-study] [--out results/study-suite-sizing]
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from eval.seedlevel import t_quantile
from eval.stats import paired_test
from eval.tasks import QUICK, STUDY
from mltp.hygiene.atomic import atomic_write_json, atomic_write_text

PAIRS = [("M3-mltp", "A1-mltp-noW"), ("A2-mltp-middle4", "A2-mltp-middle4-noW"), ("A2-mltp-last4", "A2-mltp-last4-noW")]
TARGET, SEEDS = 0.01, 3
T_3SEEDS = t_quantile(0.975, 2)  # 3 seeds (2 df): what a seed-level test pays for few seeds


def items(suite: dict, task: str) -> int:
    cfg = suite[task]
    return cfg.get("pairs") or cfg.get("queries") or cfg.get("test") or cfg["sets"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="results/cpu-study")
    p.add_argument("--out", default="results/study-suite-sizing")
    args = p.parse_args()
    runs = Path(args.runs)
    by_family: dict[str, dict] = {}
    for a, b in PAIRS:
        for seed in range(SEEDS):
            ra = json.loads((runs / a / f"seed-{seed}" / "results.json").read_text())
            rb = json.loads((runs / b / f"seed-{seed}" / "results.json").read_text())
            per: dict[str, list] = {}
            for task, ta in ra["tasks"].items():
                t = paired_test(ta, rb["tasks"][task], n_resamples=2000)
                # SE scaled to the study suite's item count of this task
                scale = math.sqrt(items(QUICK, task) / items(STUDY, task))
                per.setdefault(ta["family"], []).append(((t["ci_high"] - t["ci_low"]) / 3.92, scale, t["diff"]))
            for family, rows in per.items():
                k = len(rows)
                f = by_family.setdefault(family, {"se_quick": [], "se_study": [], "diff": []})
                f["se_quick"].append(math.sqrt(sum(se ** 2 for se, _, _ in rows)) / k)
                f["se_study"].append(math.sqrt(sum((se * s) ** 2 for se, s, _ in rows)) / k)
                f["diff"].append(float(np.mean([d for _, _, d in rows])))
    table = {}
    for family, f in by_family.items():
        seed_sd = float(np.std(f["diff"], ddof=1))
        se_q, se_s = float(np.mean(f["se_quick"])), float(np.mean(f["se_study"]))
        table[family] = {
            "item_se_quick": se_q, "item_se_study": se_s, "seed_sd": seed_sd,
            "half_width_quick": 1.96 * math.sqrt((seed_sd ** 2 + se_q ** 2) / SEEDS),
            "half_width_study": 1.96 * math.sqrt((seed_sd ** 2 + se_s ** 2) / SEEDS),
            "half_width_study_t": T_3SEEDS * math.sqrt((seed_sd ** 2 + se_s ** 2) / SEEDS),
            "pairs": len(f["diff"]),
        }
    atomic_write_json(Path(args.out + ".json"), {"target_half_width": TARGET, "seeds": SEEDS, "runs": str(runs),
                                                 "pairs": PAIRS, "families": table})
    lines = [f"# Sizing the study suite (from `{runs}`, {len(PAIRS)} W on/off pairs x {SEEDS} seeds)", "",
             f"Target: the W on - W off difference's 95% CI half-width <= {TARGET} per family at {SEEDS} seeds. "
             "Made by `python scripts/size_study_suite.py`.", "",
             "| family | item SE, quick | item SE, study | seed SD | half-width, quick | half-width, study | study, t (2 df) |",
             "|---|---|---|---|---|---|---|"]
    for family, t in table.items():
        lines.append(f"| {family} | {t['item_se_quick']:.4f} | {t['item_se_study']:.4f} | {t['seed_sd']:.4f} | "
                     f"{t['half_width_quick']:.4f} | {t['half_width_study']:.4f} | {t['half_width_study_t']:.4f} |")
    lines += ["", "Half-widths use 1.96 (seeds and items pooled, as a hierarchical bootstrap does); a t test over "
              "3 seeds alone pays 4.30 instead, and meets the target only in STS, retrieval and classification. "
              "More seeds, not more items, would close that gap: the seed SD dominates every family.", "",
              "The seed SD is measured on the quick suite, so the study column's seed part is an upper bound: "
              "more clustering sets also shrink the evaluation noise inside each seed's clustering score."]
    atomic_write_text(Path(args.out + ".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
