"""How well the crossed interval (eval/crossed.py) covers, in a brute-force simulation with known variances.

The regimes are the registered primary comparisons' (W on vs off over all 30 blocks, middle 4 vs
last 4; every family) as a study report measured them: its seed, item and residual terms are turned
back into per-item standard deviations of the model y_si = mu + a_s + b_i + c_si (eval/crossed.py)
over the family's own datasets and item counts; then replicate studies are drawn at 3 and at 8
seeds and each one's 95% interval is checked against mu. Beside the bounded Satterthwaite df the
report uses, the classical plug-in df; and how often each rejects a true null at smaller alphas
(the tail that Holm and Benjamini-Hochberg read), as a multiple of alpha.

    python scripts/crossed_coverage.py [--report results/cpu-study2/report.json] [--replicates 20000]
Writes results/crossed-coverage.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eval.crossed import components, crossed_variance, satterthwaite  # noqa: E402
from eval.tdist import t_sf  # noqa: E402
from eval.textio import atomic_write_text  # noqa: E402

PRIMARY = [("M3-mltp", "A1-mltp-noW"), ("A2-mltp-middle4", "A2-mltp-last4")]
# Where the plug-in df fails: seeds carry most of the variance, 8 datasets of 100 items (per-item SDs).
SYNTHETIC = {"comparison": "seeds most of it (synthetic)", "family": "sts-like", "items": [100] * 8,
             "sds": (0.006, 0.03, 0.02)}
ALPHAS = (0.05, 0.01, 0.001, 0.0004)


def regime(v: dict, ns: list[int]) -> tuple[float, float, float]:
    """(seed SD, item SD, interaction SD) per item whose family terms at S seeds are the report's."""
    c, S, D = v["components"], v["n_seeds"], len(ns)
    nh = D / sum(1 / n for n in ns)  # the harmonic item count: sum_d 1/(n_d D^2) = 1/(nh D)
    sc2 = c["residual"] * S * nh * D
    sb2 = max(c["item"] - c["residual"], 0.0) * nh * D
    sa2 = max(c["seed"] - c["residual"], 0.0) * S
    return math.sqrt(sa2), math.sqrt(sb2), math.sqrt(sc2)


def p_values(S: int, sa: float, sb: float, sc: float, ns: list[int], R: int, rng) -> dict[str, np.ndarray]:
    """Two-sided p of the true effect in R replicate studies, bounded and plug-in df; in blocks."""
    out = {"bounded": [], "plug-in": []}
    for start in range(0, R, 1000):
        r = min(1000, R - start)
        a = rng.normal(0, sa, size=(r, S, 1))
        tables = [a + rng.normal(0, sb, size=(r, 1, n)) + rng.normal(0, sc, size=(r, S, n)) for n in ns]
        thetas = np.stack([P.mean(axis=-1) for P in tables], axis=-1)  # (r, S, D), true effect 0
        c = components(thetas, tables)
        v, df = crossed_variance(c)
        plug = satterthwaite([(1.0, c["seed"], S - 1), (1.0, c["item"], c["df_item"]),
                              (-1.0, c["residual"], c["df_residual"])], bounded=False)
        plug = np.where(c["item"] > c["residual"], plug, S - 1.0)
        t = np.abs(thetas.mean(axis=(-2, -1))) / np.sqrt(v)
        out["bounded"] += [2 * t_sf(x, d) for x, d in zip(t, df)]
        out["plug-in"] += [2 * t_sf(x, d) for x, d in zip(t, plug)]
    return {k: np.array(p) for k, p in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--report", default="results/cpu-study2/report.json")
    ap.add_argument("--replicates", type=int, default=20000)
    ap.add_argument("--out", default="results/crossed-coverage")
    args = ap.parse_args()
    report = json.loads(Path(args.report).read_text())
    n_items = {}
    for c in report["comparisons"]:
        for task, t in (c.get("effect") or {}).get("n_items", {}).items():
            n_items.setdefault(c["family"], {})[task] = t
    rows, rng = [], np.random.default_rng(20261208)
    cases = [(v["comparison"], v["family"], list(n_items[v["family"]].values()), v) for v in report["verdicts"]
             if (v["a"], v["b"]) in PRIMARY and (v.get("components") or {}).get("seed") is not None]
    cases.append((SYNTHETIC["comparison"], SYNTHETIC["family"], SYNTHETIC["items"], None))
    for comparison, family, ns, v in cases:
        sds = regime(v, ns) if v else SYNTHETIC["sds"]
        for S in (3, 8):
            ps = p_values(S, *sds, ns, args.replicates, rng)
            rows.append({"comparison": comparison, "family": family, "items": ns, "seeds": S,
                         "sd_seed": sds[0], "sd_item": sds[1], "sd_interaction": sds[2],
                         "double_count": v["components"]["residual"] / v["components"]["item"] if v else None,
                         **{f"{k} coverage": float(np.mean(p >= 0.05)) for k, p in ps.items()},
                         **{f"{k} rate/alpha": [float(np.mean(p < a) / a) for a in ALPHAS] for k, p in ps.items()}})
            print(rows[-1], flush=True)
    atomic_write_text(args.out + ".json", json.dumps({"report": args.report, "replicates": args.replicates,
                                                      "alphas": ALPHAS, "rows": rows}, indent=1) + "\n")
    atomic_write_text(args.out + ".md", "\n".join(markdown(rows, args)) + "\n")


def markdown(rows: list[dict], args) -> list[str]:
    se = math.sqrt(0.95 * 0.05 / args.replicates)
    lines = [f"# Coverage of the crossed interval (eval/crossed.py), {args.replicates} replicate studies a row", "",
             f"Made by `python scripts/crossed_coverage.py --report {args.report}`: the registered primary "
             f"comparisons' variance terms as that report measured them (at its seeds), turned into per-item SDs "
             f"over the family's datasets, then studies drawn at 3 and 8 seeds. Coverage of the 95% interval "
             f"(Monte Carlo SE {se:.4f}); tail: how often p < alpha under a true null, as a multiple of alpha "
             f"(1 = exact) for alpha = {', '.join(map(str, ALPHAS))}. Bounded: the df the report uses; plug-in: "
             f"classical Satterthwaite. Residual / item: the share of the item term that is seed-by-item "
             f"interaction, which adding the seed and item terms as they stand would count twice.", "",
             "| comparison | family | items | seeds | SD seed / item / interaction | residual / item | coverage, bounded | "
             "coverage, plug-in | tail, bounded | tail, plug-in |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['comparison']} | {r['family']} | {'+'.join(map(str, r['items']))} | {r['seeds']} | "
                     f"{r['sd_seed']:.4f} / {r['sd_item']:.4f} / {r['sd_interaction']:.4f} | "
                     f"{'' if r['double_count'] is None else format(r['double_count'], '.2f')} | "
                     f"{r['bounded coverage']:.4f} | {r['plug-in coverage']:.4f} | "
                     f"{' / '.join(f'{x:.1f}' for x in r['bounded rate/alpha'])} | "
                     f"{' / '.join(f'{x:.1f}' for x in r['plug-in rate/alpha'])} |")
    return lines


if __name__ == "__main__":
    main()
