"""Size the study from measured variance: how precise its verdicts are at 3 and 8 seeds, at 60 and 240 steps.

From a study folder at several seeds (default results/cpu-study2: the `study` suite, 60 steps,
3 seeds), every comparison below and family is split as eval/crossed.py splits it: the seed term,
the items' shared term and their interaction (eval.crossed.components), in per-study units:
    A = the seed variance of the family effect (interaction taken out) -> A / S at S seeds;
    B = the variance of the shared items' mean                         -> B, whatever S (one item
        draw serves every seed, so it does not shrink with seeds);
    C = the seed-by-item interaction at one seed                       -> C / S.
The predicted variance at S seeds is A/S + B + C/S, its 95% and 90% half-widths Student's t at the
bounded Satterthwaite df eval/crossed.py uses, with the components at their measured values.
At 240 steps only seed 0 exists (results/cpu-study2-240steps): its items-only variance (B + C at one
seed) against the same at 60 steps scales B and C; A, the seed term, is carried over from 60 steps
unchanged (no second seed at 240 steps to measure it).
Sized on the W on/off pairs and on the layer and head comparisons, whose item terms are far larger.
A verdict is within reach when the 90% half-width is below the margin minus |effect| (equivalence)
or below |effect| at 95% (a difference), the effect taken as measured; for the 240-step column
also at alpha / 8, the strictest step of Holm over the 8 registered primary tests.

    python scripts/size_study_suite.py [--runs results/cpu-study2] [--pilot results/cpu-study2-240steps]
Writes results/study-suite-sizing.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eval.crossed import crossed_effect, satterthwaite  # noqa: E402
from eval.report import matched_seeds  # noqa: E402
from eval.tdist import t_quantile  # noqa: E402
from eval.textio import atomic_write_text  # noqa: E402
from eval.verdict import EQUIVALENCE_MARGIN  # noqa: E402

COMPARISONS = [  # (question, a, b, the test the study asks of it)
    ("W on vs off, all 30", "M3-mltp", "A1-mltp-noW", "equivalence"),
    ("W on vs off, middle 4", "A2-mltp-middle4", "A2-mltp-middle4-noW", "equivalence"),
    ("W on vs off, last 4", "A2-mltp-last4", "A2-mltp-last4-noW", "equivalence"),
    ("middle 4 vs last 4", "A2-mltp-middle4", "A2-mltp-last4", "difference"),
    ("all 30 vs middle 4", "M3-mltp", "A2-mltp-middle4", "difference"),
    ("all 30 vs last 4", "M3-mltp", "A2-mltp-last4", "difference"),
    ("MLTP vs normalised mean, middle 4", "A2-mltp-middle4", "A2-layer-mean-norm-middle4", "difference"),
    ("MLTP vs normalised mean, all 30", "M3-mltp", "A1-layer-mean-norm", "difference"),
]
FAMILIES = ("sts", "retrieval", "classification", "clustering")


def load(folder: Path, name: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((folder / name).glob("seed-*/results.json"))]


def datasets(runs: list[dict], family: str) -> list[str]:
    return [n for n, t in runs[0]["tasks"].items() if t["family"] == family]


def split(fx: dict) -> dict:
    """A, B, C (module note) and the item df from crossed_effect's terms at S seeds."""
    c, S = fx["components"], len(fx["per_seed"])
    return {"A": max(c["seed"] - c["residual"], 0.0) * S, "B": max(c["item"] - c["residual"], 0.0),
            "C": c["residual"] * S, "df_item": c["df_item"]}


def half_widths(parts: dict, S: int, alpha: float = 0.05) -> tuple[float, float]:
    """(two-sided, one-sided) half-widths at level alpha: 95% and 90% intervals at alpha = 0.05."""
    seed_term = (parts["A"] + parts["C"]) / S  # what the per-seed spread holds: seeds and interaction
    v = seed_term + parts["B"]
    df = float(satterthwaite([(1.0, seed_term, S - 1.0), (1.0, parts["B"], parts["df_item"])]))
    se = math.sqrt(v)
    return t_quantile(1 - alpha / 2, df) * se, t_quantile(1 - alpha, df) * se


def reach(test: str, effect: float, two_sided: float, one_sided: float) -> str:
    if test == "equivalence":
        return "yes" if abs(effect) + one_sided < EQUIVALENCE_MARGIN else "no"
    return "yes" if abs(effect) > two_sided else "no"


def row(question, a, b, test, family, runs, pilot) -> dict | None:
    ra, rb, seeds = matched_seeds(runs[a], runs[b])
    names = datasets(ra, family)
    if len(seeds) < 2 or not names:
        return None
    fx = crossed_effect(ra, rb, names, EQUIVALENCE_MARGIN)
    parts = split(fx)
    one = crossed_effect(ra[:1], rb[:1], names, EQUIVALENCE_MARGIN)["components"]["item"]  # B + C at seed 0
    out = {"question": question, "a": a, "b": b, "test": test, "family": family, "seeds": len(seeds),
           "effect": fx["effect"], **parts}
    for S in (3, 8):
        out[f"hw95_{S}"], out[f"hw90_{S}"] = half_widths(parts, S)
    if pilot and a in pilot and b in pilot:
        pa, pb, _ = matched_seeds(pilot[a], pilot[b])
        p = crossed_effect(pa[:1], pb[:1], names, EQUIVALENCE_MARGIN)
        ratio = p["components"]["item"] / one if one > 0 else math.nan
        scaled = parts | {"B": parts["B"] * ratio, "C": parts["C"] * ratio}
        out |= {"effect_240": p["effect"], "item_ratio_240": ratio}
        out["hw95_8_240"], out["hw90_8_240"] = half_widths(scaled, 8)
        out["reach_8_240"] = reach(test, p["effect"], out["hw95_8_240"], out["hw90_8_240"])
        # Holm over the 8 primary tests: its strictest step tests at alpha / 8
        out["reach_8_240_holm"] = reach(test, p["effect"], *half_widths(scaled, 8, 0.05 / 8))
    out["reach_8"] = reach(test, fx["effect"], out["hw95_8"], out["hw90_8"])
    return out


def markdown(rows: list[dict], args) -> list[str]:
    lines = [f"# Sizing the study (from `{args.runs}` and the 240-step pilot `{args.pilot}`)", "",
             "Made by `python scripts/size_study_suite.py`. Per comparison and family: the effect and variance terms "
             f"measured at {rows[0]['seeds']} seeds and 60 steps (A: seeds, B: the items every seed shares, C: their "
             "interaction; scripts/size_study_suite.py says how), the predicted 95% / 90% half-widths at 3 and 8 "
             "seeds (B does not shrink with seeds), and at 8 seeds and 240 steps with the item terms scaled by the "
             "pilot's items-only variance (240 / 60 steps, seed 0) and A carried over. Reach: equivalence needs "
             f"|effect| + 90% half-width < {EQUIVALENCE_MARGIN:g}, a difference |effect| > 95% half-width, the "
             "effect as measured (60 steps) or as the pilot measured it (240 steps); \"at alpha/8\": the same at Holm's "
             "strictest step over the 8 primary tests.", "",
             "| comparison (test) | family | effect, 60 | A | B | C | 95% / 90% hw, 3 seeds | 95% / 90% hw, 8 seeds | "
             "reach, 8 | items x, 240 | effect, 240 (seed 0) | 95% / 90% hw, 8 seeds, 240 | reach, 8, 240 (at alpha/8) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tail = (f"{r['item_ratio_240']:.2f} | {r['effect_240']:+.4f} | {r['hw95_8_240']:.4f} / {r['hw90_8_240']:.4f} | "
                f"{r['reach_8_240']} ({r['reach_8_240_holm']})" if "effect_240" in r else " | | | ")
        lines.append(f"| {r['question']} ({r['test']}) | {r['family']} | {r['effect']:+.4f} | {r['A']:.1e} | {r['B']:.1e} | "
                     f"{r['C']:.1e} | {r['hw95_3']:.4f} / {r['hw90_3']:.4f} | {r['hw95_8']:.4f} / {r['hw90_8']:.4f} | "
                     f"{r['reach_8']} | {tail} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="results/cpu-study2")
    p.add_argument("--pilot", default="results/cpu-study2-240steps")
    p.add_argument("--out", default="results/study-suite-sizing")
    args = p.parse_args()
    names = {n for _, a, b, _ in COMPARISONS for n in (a, b)}
    runs = {n: load(Path(args.runs), n) for n in names}
    pilot = {n: r for n in names if (r := load(Path(args.pilot), n))}
    rows = [r for question, a, b, test in COMPARISONS for family in FAMILIES
            if (r := row(question, a, b, test, family, runs, pilot))]
    atomic_write_text(args.out + ".json", json.dumps({"runs": args.runs, "pilot": args.pilot,
                                                      "margin": EQUIVALENCE_MARGIN, "rows": rows}, indent=1) + "\n")
    lines = markdown(rows, args)
    atomic_write_text(args.out + ".md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
