"""The study's report: per-family scores with their spread over seeds, paired comparisons, a chart.

Input: {configuration: [results.json of seed 0, seed 1, ...]} as written by run.py. Two tests per
comparison and family, because they answer different questions:
- the paper's test: Wilcoxon signed-rank across the datasets of the family (pairs = one dataset's
  main score, averaged over seeds), p < 0.05, no correction. With 2-8 datasets it has little power:
  with n = 5 the smallest possible two-sided p is 0.0625, so "not significant" is the only outcome.
- per-item paired tests within each dataset (eval.stats.paired_test: bootstrap over queries,
  sentence pairs, test items or clustering sets) on seed-matched runs: many more pairs, so they
  can see what the Wilcoxon cannot, but they speak to these datasets and this seed only.
Both use only the seeds the two configurations share (`matched_seeds`).
A difference smaller than the spread between seeds of the same configuration is reported as such.
No plotting library: the chart is a hand-written SVG.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from mltp.atomic import atomic_write_text

from .stats import paired_test, wilcoxon_signed_rank

FAMILY_ORDER = ("sts", "retrieval", "classification", "clustering")
ALPHA = 0.05


def _families(runs: dict[str, list[dict]]) -> list[str]:
    seen = {r["family"] for seeds in runs.values() for res in seeds for r in res["tasks"].values()}
    return [f for f in FAMILY_ORDER if f in seen] + sorted(seen - set(FAMILY_ORDER))


def summarise(seeds: list[dict]) -> dict:
    """Per task: mean over seeds; per family: mean and std over seeds of the family average."""
    tasks = {}
    for name in seeds[0]["tasks"]:
        scores = [s["tasks"][name]["main_score"] for s in seeds if name in s["tasks"]]
        tasks[name] = {"family": seeds[0]["tasks"][name]["family"], "mean": statistics.fmean(scores), "scores": scores}
    families = {}
    for family in {t["family"] for t in tasks.values()}:
        per_seed = [statistics.fmean(s["tasks"][n]["main_score"] for n in s["tasks"] if s["tasks"][n]["family"] == family) for s in seeds]
        families[family] = {"mean": statistics.fmean(per_seed), "std": statistics.stdev(per_seed) if len(per_seed) > 1 else None, "seeds": len(per_seed)}
    return {"tasks": tasks, "families": families}


def matched_seeds(a: list[dict], b: list[dict]) -> tuple[list[dict], list[dict], list]:
    """The runs of a and of b at the seeds both have, in seed order, and those seeds; all of each
    (and no seeds) if they share none.

    Configurations run at one seed share their training data order and dropout draws (common random
    numbers: in the CPU study two configurations at one seed differ far less than one configuration
    at two seeds; results/README.md). A mean over 2 seeds against a mean over 1 would mix that
    seed-to-seed noise back into the difference.
    """
    by_a = {r["config"].get("seed"): r for r in a}
    by_b = {r["config"].get("seed"): r for r in b}
    common = sorted(set(by_a) & set(by_b), key=lambda s: (s is None, s))
    if not common:
        return a, b, []
    return [by_a[s] for s in common], [by_b[s] for s in common], common


def compare(a: list[dict], b: list[dict], family: str) -> dict:
    a, b, seeds = matched_seeds(a, b)
    sa, sb = summarise(a), summarise(b)
    names = [n for n, t in sa["tasks"].items() if t["family"] == family and n in sb["tasks"]]
    x = [sa["tasks"][n]["mean"] for n in names]
    y = [sb["tasks"][n]["mean"] for n in names]
    out = {"datasets": names, "diff": statistics.fmean(x) - statistics.fmean(y) if names else math.nan, "seeds": seeds}
    out["wilcoxon"] = wilcoxon_signed_rank(x, y) if len(names) >= 1 else None
    # Per-item tests on matched seeds (seed k of a against seed k of b).
    per_item = {}
    for n in names:
        tests = []
        for ra, rb in zip(a, b):
            try:
                tests.append(paired_test(ra["tasks"][n], rb["tasks"][n]))
            except (KeyError, ValueError):
                pass  # per-item data missing or mismatched (e.g. different suites): no test
        if tests:
            per_item[n] = tests[0] | {"seeds_tested": len(tests), "seeds_significant": sum(t["p_value"] < ALPHA for t in tests)}
    out["per_item"] = per_item
    spreads = [s for s in (sa["families"].get(family, {}).get("std"), sb["families"].get(family, {}).get("std")) if s is not None]
    out["seed_spread"] = max(spreads) if spreads else None
    return out


def reading(label: str, a: str, b: str, family: str, c: dict) -> str:
    """One sentence that says what the numbers support, and what they do not."""
    d = c["diff"]
    w = c["wilcoxon"]
    wins = sum(1 for t in c["per_item"].values() if t["p_value"] < ALPHA and t["diff"] > 0)
    losses = sum(1 for t in c["per_item"].values() if t["p_value"] < ALPHA and t["diff"] < 0)
    n = len(c["datasets"])
    noise = c["seed_spread"] is not None and abs(d) <= c["seed_spread"]
    head = f"{label}, {family}: {a} {'+' if d >= 0 else ''}{d:.4f} vs {b}"
    if w and w["p_value"] < ALPHA and not noise:
        verdict = f"a consistent difference (Wilcoxon p={w['p_value']:.3f} over {n} datasets)"
    elif wins or losses:
        verdict = (f"the Wilcoxon test over {n} datasets cannot tell (p={w['p_value']:.3f}); per-item tests find "
                   f"{a} better on {wins} and worse on {losses} of {n} datasets")
    else:
        verdict = f"no difference distinguishable from noise (Wilcoxon p={w['p_value']:.3f} over {n} datasets, no per-item test below {ALPHA})" if w else "no data"
    if noise:
        verdict += f"; the difference is within the spread between seeds ({c['seed_spread']:.4f})"
    return f"{head}: {verdict}."


def bar_chart(summaries: dict[str, dict], families: list[str], title: str) -> str:
    """Grouped bars: one group per family, one bar per configuration, whiskers = seed std."""
    configs = list(summaries)
    W, H, left, bottom, top = 980, 420, 60, 70, 40
    group_w = (W - left - 20) / max(len(families), 1)
    bar_w = group_w * 0.8 / max(len(configs), 1)
    values = [summaries[c]["families"].get(f, {}).get("mean") for c in configs for f in families]
    vmax = max([v for v in values if v is not None] + [0.1])
    vmax = math.ceil(vmax * 10) / 10
    y = lambda v: top + (H - top - bottom) * (1 - v / vmax)  # noqa: E731
    palette = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd", "#2f4b7c", "#a05195"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H + 20 * ((len(configs) + 3) // 4)}" font-family="sans-serif" font-size="11">',
             f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>']
    for k in range(6):
        v = vmax * k / 5
        parts.append(f'<line x1="{left}" x2="{W - 20}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/><text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    for fi, family in enumerate(families):
        x0 = left + fi * group_w + group_w * 0.1
        parts.append(f'<text x="{left + fi * group_w + group_w / 2:.1f}" y="{H - bottom + 18}" text-anchor="middle" font-size="12">{family}</text>')
        for ci, config in enumerate(configs):
            stats = summaries[config]["families"].get(family)
            if not stats:
                continue
            x = x0 + ci * bar_w
            shown = max(stats["mean"], 0.0)  # a negative correlation draws as an empty bar; the tooltip keeps the value
            parts.append(f'<rect x="{x:.1f}" y="{y(shown):.1f}" width="{bar_w * 0.9:.1f}" height="{y(0) - y(shown):.1f}" fill="{palette[ci % len(palette)]}"><title>{config} {family}: {stats["mean"]:.4f}</title></rect>')
            if stats["std"]:
                cx = x + bar_w * 0.45
                parts.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(stats["mean"] + stats["std"]):.1f}" y2="{y(max(stats["mean"] - stats["std"], 0)):.1f}" stroke="#000"/>')
    for ci, config in enumerate(configs):
        lx, ly = left + (ci % 4) * 230, H - bottom + 40 + 20 * (ci // 4)
        parts.append(f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{palette[ci % len(palette)]}"/><text x="{lx + 14}" y="{ly}">{config}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def probe_chart(table: dict, title: str, legend: str = "solid: eos token, dashed: mean") -> str:
    """Lines: family average per block, solid for eos pooling (or any other mode), dashed for mean."""
    W, H, left, bottom, top = 900, 400, 60, 60, 60
    families = sorted({f for mode in table.values() for row in mode.values() for f in row["family_averages"]},
                      key=lambda f: FAMILY_ORDER.index(f) if f in FAMILY_ORDER else 99)
    layers = sorted({int(layer) for mode in table.values() for layer in mode})
    vals = [row["family_averages"][f] for mode in table.values() for row in mode.values() for f in row["family_averages"]]
    vmin, vmax = min(vals + [0]), max(vals + [0.1])
    x = lambda layer: left + (W - left - 20) * (layer - layers[0]) / max(layers[-1] - layers[0], 1)  # noqa: E731
    y = lambda v: top + (H - top - bottom) * (1 - (v - vmin) / max(vmax - vmin, 1e-9))  # noqa: E731
    colours = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
             f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
             f'<text x="{W / 2}" y="{H - 10}" text-anchor="middle">block (1 = first, {layers[-1]} = last, after the final norm)</text>']
    for k in range(6):
        v = vmin + (vmax - vmin) * k / 5
        parts.append(f'<line x1="{left}" x2="{W - 20}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/><text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    for layer in layers:  # one tick per probed block
        parts.append(f'<text x="{x(layer):.1f}" y="{H - bottom + 16}" text-anchor="middle">{layer}</text>')
    for fi, family in enumerate(families):
        for mode in table:
            dash = ' stroke-dasharray="5,4"' if mode == "mean" else ""
            pts = " ".join(f"{x(int(layer)):.1f},{y(row['family_averages'][family]):.1f}" for layer, row in sorted(table[mode].items(), key=lambda kv: int(kv[0])) if family in row["family_averages"])
            parts.append(f'<polyline fill="none" stroke="{colours[fi % 4]}" stroke-width="2"{dash} points="{pts}"><title>{family} ({mode})</title></polyline>')
        parts.append(f'<text x="{left + 10 + fi * 150}" y="{top - 14}" fill="{colours[fi % 4]}" font-size="12">{family}</text>')
    parts.append(f'<text x="{W - 20}" y="{top - 14}" text-anchor="end">{legend}</text></svg>')
    return "\n".join(parts)


def write_report(runs: dict[str, list[dict]], out: Path, *, comparisons: list[tuple[str, str, str]], title: str,
                 commands: list[str], sweep_seconds: float | None = None) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    families = _families(runs)
    summaries = {name: summarise(seeds) for name, seeds in runs.items()}
    first = next(iter(runs.values()))[0]
    suite = first["suite"]
    total_minutes = sum(s["seconds"]["total"] for seeds in runs.values() for s in seeds) / 60
    # Runs may come from several sessions: name every machine and code revision, never just one.
    envs = [s["environment"] for seeds in runs.values() for s in seeds]
    machines = sorted({f"{e['device']}, torch {e['torch']}" for e in envs})
    codes = sorted({e["git_revision"][:12] + (" (uncommitted changes)" if e.get("git_dirty") else "") for e in envs})
    dates = sorted(e["date"] for e in envs)
    # One forward per step or three (mltp.train joint_forward): the same model and loss, different
    # dropout noise; runs from before the option existed made three.
    forwards = [("joint forward" if s["config"].get("joint_forward") else "separate forwards")
                for seeds in runs.values() for s in seeds if s["config"].get("steps") and not s["config"].get("eval_only")]
    forward_note = ", ".join(f"{mode} ({forwards.count(mode)} run{'s' if forwards.count(mode) > 1 else ''})" for mode in sorted(set(forwards))) if forwards else ""

    md = [f"# {title}", "",
          f"Machine: {'; '.join(machines)}. Code: {', '.join(codes)}. "
          f"Runs dated {dates[0]}{f' to {dates[-1]}' if dates[-1] != dates[0] else ''}. Suite: `{suite}`. Model: `{first['config']['model']}`. Training: {first['config']['steps']} steps x "
          f"{first['config']['batch_size']} queries, lr {first['config']['lr']}, max {first['config']['max_length']} tokens"
          + (f", {forward_note} per step" if forward_note else "") + ". "
          f"Runs: {sum(len(s) for s in runs.values())} ({total_minutes:.0f} min of compute"
          + (f", this sweep session {sweep_seconds / 60:.0f} min" if sweep_seconds else "") + ").", "",
          "Reproduce: " + "; ".join(f"`{c}`" for c in commands), "",
          "## Scores per family (main score averaged over the family's datasets; ± = std over seeds)", "",
          "| configuration | seeds | " + " | ".join(families) + " |", "|---|---|" + "---|" * len(families)]
    for name, s in summaries.items():
        cells = []
        for f in families:
            st = s["families"].get(f)
            cells.append("" if not st else f"{st['mean']:.4f}" + (f" ± {st['std']:.4f}" if st["std"] else ""))
        md.append(f"| {name} | {len(runs[name])} | " + " | ".join(cells) + " |")

    md += ["", "## Per dataset (main score, mean over seeds)", "", "| dataset | family | " + " | ".join(summaries) + " |",
           "|---|---|" + "---|" * len(summaries)]
    for task, t in next(iter(summaries.values()))["tasks"].items():
        md.append(f"| {task} | {t['family']} | " + " | ".join(f"{s['tasks'][task]['mean']:.4f}" if task in s["tasks"] else "" for s in summaries.values()) + " |")

    results = {"title": title, "suite": suite, "environments": envs, "commands": commands, "summaries": summaries, "comparisons": []}
    md += ["", "## Comparisons", "",
           f"diff = first minus second, family average over the seeds both configurations have (seeds: which; "
           f"configurations at one seed share data order and dropout draws). W p = Wilcoxon signed-rank over datasets "
           f"(the paper's test). Per-item: datasets where a paired bootstrap over items finds the first better / worse "
           f"at p < {ALPHA} (the first shared seed). Seed spread: the larger std over those seeds.", "",
           "| comparison | family | seeds | diff | W p | per-item better / worse / n | seed spread |", "|---|---|---|---|---|---|---|"]
    sentences = []
    for label, a, b in comparisons:
        for family in families:
            c = compare(runs[a], runs[b], family)
            if not c["datasets"]:
                continue
            results["comparisons"].append({"label": label, "a": a, "b": b, "family": family, **c})
            wins = sum(1 for t in c["per_item"].values() if t["p_value"] < ALPHA and t["diff"] > 0)
            losses = sum(1 for t in c["per_item"].values() if t["p_value"] < ALPHA and t["diff"] < 0)
            wp = c["wilcoxon"]["p_value"] if c["wilcoxon"] else math.nan
            spread = "" if c["seed_spread"] is None else f"{c['seed_spread']:.4f}"
            shared = ", ".join(map(str, c["seeds"])) or "none shared"
            md.append(f"| {label} ({a} vs {b}) | {family} | {shared} | {c['diff']:+.4f} | {wp:.3f} | {wins} / {losses} / {len(c['datasets'])} | {spread} |")
            sentences.append(reading(label, a, b, family, c))
    md += ["", "## Reading", "", "What the numbers support, comparison by comparison (generated from the table above, "
           "by fixed rules: a Wilcoxon p < 0.05 with a difference larger than the seed spread counts as consistent):", ""]
    md += [f"- {s}" for s in sentences]
    seeds = {len(s) for s in runs.values()}
    md += ["", "Caveats: " + ("one seed per configuration, so the spread between seeds is unknown and every difference "
                              "may be seed noise; " if seeds == {1} else "") +
           "the Wilcoxon test over 2-8 datasets rarely reaches p < 0.05 whatever the effect; per-item tests are "
           "uncorrected for the number of datasets and comparisons.", "", "![scores per family](chart.svg)", ""]

    paths = {"markdown": out / "report.md", "json": out / "report.json", "chart": out / "chart.svg"}
    atomic_write_text(paths["chart"], bar_chart(summaries, families, title))
    atomic_write_text(paths["json"], json.dumps(results, indent=2, default=float) + "\n")
    atomic_write_text(paths["markdown"], "\n".join(md))
    return paths
