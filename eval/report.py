"""The study's report: per-family scores with their spread over seeds, verdicts, tests, a chart.

Input: {configuration: [results.json of seed 0, seed 1, ...]} as written by run.py. Every
comparison uses only the seeds its two configurations share (`matched_seeds`). Per comparison and
family, three layers of evidence, from the one the reading rests on to the narrowest:
- the verdict (eval.verdict): equivalent / different / undecided at this precision, from a
  hierarchical bootstrap over seeds and items (eval.hierarchical), from 2 seeds on also Student's t
  over the per-seed effects (eval.seedlevel), and a fixed equivalence margin;
- the paper's test: Wilcoxon signed-rank across the family's datasets (pairs = one dataset's
  main score, averaged over the shared seeds). With n datasets its two-sided p cannot go below
  2 / 2^n (eval.stats.sign_flip_floor): 0.0078 for 8, 0.0625 for 5, 0.25 for 3, 0.5 for 2;
- per-item paired tests within each dataset at each shared seed (eval.stats.paired_test).
Multiple comparisons: Holm's adjustment (eval.stats.holm) over every test of one type in one
report: the verdicts' difference p-values form one family, their equivalence (TOST) p-values
another, the Wilcoxon p-values a third, and the per-item p-values that can reach 0.05 a fourth.
Clustering scores are shown beside their chance level (eval.chance), read from the results or,
for runs that predate it, recomputed from the sets with the gold sizes on both sides.
No plotting library: the chart is a hand-written SVG.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np

from mltp.atomic import atomic_write_text

from .chance import expected_v_measure
from .hierarchical import N_RESAMPLES, family_effect
from .stats import holm, paired_test, permutation_p, sign_flip_floor, wilcoxon_signed_rank
from .verdict import ALPHA, EQUIVALENCE_MARGIN, decide

FAMILY_ORDER = ("sts", "retrieval", "classification", "clustering")
ITEM_WORD = {"sts": "pairs", "retrieval": "queries", "classification": "items", "clustering": "sets"}


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
    for family in dict.fromkeys(t["family"] for t in tasks.values()):  # first-seen order: a rebuilt report.json diffs clean
        per_seed = [statistics.fmean(s["tasks"][n]["main_score"] for n in s["tasks"] if s["tasks"][n]["family"] == family) for s in seeds]
        families[family] = {"mean": statistics.fmean(per_seed), "std": statistics.stdev(per_seed) if len(per_seed) > 1 else None, "seeds": len(per_seed)}
    return {"tasks": tasks, "families": families}


def layer_table_moves(seeds: list[dict]) -> list[str]:
    """How far each trained run's layer table moved, in seed order (none: no table): its relative
    change, or, for a table that starts at zero (the scalar mix's uniform logits), where it ended."""
    tables = [r["train"]["layer_table"] for r in sorted(seeds, key=lambda r: r["config"].get("seed") or 0)
              if (r.get("train") or {}).get("layer_table") and "intervention" not in r]
    return [f"{t['relative_change']:.2%}" if t["relative_change"] is not None else f"0 -> {t['norm_end']:.2f}"
            for t in tables]


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


def unshared_mixtures(a: list[dict], b: list[dict], seeds: list) -> list:
    """The shared seeds at which the two runs trained on different mixtures (rows or rows dropped
    by decontamination): there they do not share their data order, as `matched_seeds` assumes."""
    return [s for s, ra, rb in zip(seeds, a, b)
            if ra.get("mixture") and rb.get("mixture") and ra["mixture"] != rb["mixture"]]


def compare(a: list[dict], b: list[dict], family: str, *, n_resamples: int = N_RESAMPLES) -> dict:
    a, b, seeds = matched_seeds(a, b)
    sa, sb = summarise(a), summarise(b)
    names = [n for n, t in sa["tasks"].items() if t["family"] == family and n in sb["tasks"]]
    x = [sa["tasks"][n]["mean"] for n in names]
    y = [sb["tasks"][n]["mean"] for n in names]
    out = {"datasets": names, "diff": statistics.fmean(x) - statistics.fmean(y) if names else math.nan, "seeds": seeds,
           "score_a": statistics.fmean(x) if names else math.nan, "score_b": statistics.fmean(y) if names else math.nan,
           "unshared_mixtures": unshared_mixtures(a, b, seeds)}
    out["wilcoxon"] = wilcoxon_signed_rank(x, y) | {"p_floor": sign_flip_floor(len(names))} if names else None
    # Per-item tests at every shared seed (seed k of a against seed k of b); none without a shared seed.
    per_item = {}
    for n in names if seeds else []:
        tests = []
        for seed, ra, rb in zip(seeds, a, b):
            try:
                tests.append({"seed": seed, **paired_test(ra["tasks"][n], rb["tasks"][n])})
            except (KeyError, ValueError):
                pass  # per-item data missing or mismatched (e.g. different suites): no test
        if tests:
            per_item[n] = tests
    out["per_item"] = per_item
    spreads = [s for s in (sa["families"].get(family, {}).get("std"), sb["families"].get(family, {}).get("std")) if s is not None]
    out["seed_spread"] = max(spreads) if spreads else None
    out["effect"], out["no_effect"] = None, None
    if not names:
        out["no_effect"] = "no dataset in common"
    elif not seeds:
        out["no_effect"] = "no seed in common: the seed-paired bootstrap needs one"
    else:
        try:
            fx = family_effect(a, b, names, n_resamples=n_resamples)
            out["effect"] = {k: v for k, v in fx.items() if k != "boot"} | decide(fx)
        except (KeyError, ValueError) as e:
            out["no_effect"] = f"per-item scores unusable: {e}"
    return out


def _fmt_p(p: float, floor: float, n: int, unit: str) -> str:
    """A p-value as the report prints it: never a floor passed off as evidence."""
    if floor > ALPHA:
        return f"cannot reject with {n} {unit}"
    if p <= floor * (1 + 1e-9):
        return f"{p:.4f} (at its floor)"
    return f"{p:.1e}" if p < 0.001 else f"{p:.3f}"


def _ci(ci) -> str:
    return f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"


def reading(v: dict, chance: float | None = None) -> str:
    """One sentence per comparison and family, from the verdict record by fixed rules."""
    head = f"{v['comparison']} ({v['a']} vs {v['b']}), {v['family']}"
    if v["verdict"] is None:
        return f"{head}: no verdict ({v['why']})."
    n = len(v["seeds"])
    if n < 2:
        seeds = f"one seed ({v['seeds'][0]}): a pilot, its CI counts items only"
    else:
        ahead = sum(e > 0 for e in v["per_seed"])
        seeds = f"{n} seeds ({', '.join(map(str, v['seeds']))}), {v['a']} ahead at {ahead} of {n}"
    seed_t = v.get("seed_t")
    t_ci = f", seed-level t 95% CI {_ci(seed_t['ci95'])} ({seed_t['df']} df)" if seed_t else ""
    text = (f"{head}: **{v['verdict']}** ({v['why']}); effect {v['effect']:+.4f}, 95% CI {_ci(v['ci95'])}, "
            f"90% CI {_ci(v['ci90'])}{t_ci}, margin +/-{v['margin']:g}; {seeds}")
    if v["verdict"] == "different" and not v["p_holm"] < ALPHA:
        text += f"; not significant after Holm's adjustment over the report's verdicts (p = {v['p_holm']:.3f})"
    if v["verdict"] == "equivalent" and not v["p_tost_holm"] < ALPHA:
        text += f"; the equivalence does not survive Holm's adjustment (TOST p = {v['p_tost_holm']:.3f})"
    if v["verdict"] == "equivalent" and v["excludes_zero"]:
        text += "; the 95% CI excludes 0: a real difference, smaller than the margin"
    if v.get("unshared_mixtures"):
        text += (f"; at seed {', '.join(map(str, v['unshared_mixtures']))} the two trained on different mixtures, "
                 "so they do not share their data order there")
    if chance is not None:
        text += f"; chance level {chance:.3f}, which {v['a']} exceeds by {v['score_a'] - chance:+.3f} and {v['b']} by {v['score_b'] - chance:+.3f}"
    return text + "."


def chance_levels(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Per clustering dataset: its chance level and where it comes from (see the module note)."""
    results = {}
    for seeds in runs.values():
        for res in seeds:
            for name, t in res["tasks"].items():
                if t["family"] == "clustering":
                    results.setdefault(name, []).append((res, t))
    out = {}
    for name, found in results.items():
        stored = [t["chance_level"] for _, t in found if "chance_level" in t]
        if len(stored) == len(found):
            out[name] = {"level": statistics.fmean(stored), "source": "expected V-measure at each run's predicted cluster sizes, mean over runs"}
            continue
        level = _gold_size_chance(name, found[0][0], found[0][1])
        if level is not None:
            out[name] = {"level": level, "source": "expected V-measure at the gold sizes (these runs store no cluster sizes)"}
    return out


def _gold_size_chance(name: str, res: dict, task: dict) -> float | None:
    from .tasks import build_task, resolve_data_dir
    for where in (res.get("config", {}).get("data_dir"), None):
        try:
            data = build_task(name, resolve_data_dir(where), suite=task.get("suite", res.get("suite", "full")))
        except (FileNotFoundError, ValueError, KeyError, OSError):
            continue
        if len(data.sets) != len(task.get("v_measures", data.sets)):
            return None  # not the sets these runs were scored on
        sizes = [np.unique(data.labels[s], return_counts=True)[1] for s in data.sets]
        return float(np.mean([expected_v_measure(c, c) for c in sizes]))
    return None


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
          "W moved: how far training moved the layer-weight table, ||W_end - W_start|| / ||W_start|| "
          "(results.json `train.layer_table.relative_change`), per seed; a table that starts at zero "
          "shows `0 -> ||W_end||`.", "",
          "| configuration | seeds | " + " | ".join(families) + " | W moved |", "|---|---|" + "---|" * (len(families) + 1)]
    for name, s in summaries.items():
        cells = []
        for f in families:
            st = s["families"].get(f)
            cells.append("" if not st else f"{st['mean']:.4f}" + (f" ± {st['std']:.4f}" if st["std"] else ""))
        cells.append(", ".join(layer_table_moves(runs[name])))
        md.append(f"| {name} | {len(runs[name])} | " + " | ".join(cells) + " |")

    chance = chance_levels(runs)
    if chance:
        fam = statistics.fmean(c["level"] for c in chance.values())
        md += ["", f"Clustering's chance level (the expected V-measure of a random partition with the same cluster sizes, "
                   f"eval.chance) averages {fam:.4f} over its datasets: read clustering scores against it, not against 0."]

    md += ["", "## Per dataset (main score, mean over seeds)", "",
           "n: the items a dataset's score rests on (pairs, queries, test items, clustering sets). Chance: clustering only.", "",
           "| dataset | family | n | chance | " + " | ".join(summaries) + " |", "|---|---|---|---|" + "---|" * len(summaries)]
    for task, t in next(iter(summaries.values()))["tasks"].items():
        n_items = next((s["tasks"][task].get("n_items") for seeds in runs.values() for s in seeds if task in s["tasks"]), None)
        level = f"{chance[task]['level']:.4f}" if task in chance else ""
        md.append(f"| {task} | {t['family']} | {n_items or ''} | {level} | "
                  + " | ".join(f"{s['tasks'][task]['mean']:.4f}" if task in s["tasks"] else "" for s in summaries.values()) + " |")

    # Every comparison first, then the multiple-comparison adjustments over all of them.
    compared = []
    # Holm multiplies the smallest bootstrap p, 2 / (1 + R), by the number of verdicts: R grows with them.
    n_boot = max(N_RESAMPLES, 40 * len(comparisons) * len(families))
    for label, a, b in comparisons:
        for family in families:
            c = compare(runs[a], runs[b], family, n_resamples=n_boot)
            if c["datasets"]:
                compared.append((label, a, b, family, c))
    verdicts = [_verdict_record(label, a, b, family, c) for label, a, b, family, c in compared]
    made = [v for v in verdicts if v["verdict"] is not None]
    for key, adjusted in (("p_value", "p_holm"), ("p_tost", "p_tost_holm")):
        for v, p in zip(made, holm([v[key] for v in made])):
            v[adjusted] = p
    wil = [c["wilcoxon"] for *_, c in compared]
    for w, p in zip(wil, holm([w["p_value"] if w["p_floor"] <= ALPHA else math.nan for w in wil])):
        w["p_holm"] = p
    tests = [t for *_, c in compared for ts in c["per_item"].values() for t in ts]
    _resolve_small_p(compared, runs, m=sum(t["p_floor"] <= ALPHA for t in tests))
    for t, p in zip(tests, holm([t["p_value"] if t["p_floor"] <= ALPHA else math.nan for t in tests])):
        t["p_holm"] = p
    scale = (f"{first['config']['model']}, {first['config']['steps']} steps x {first['config']['batch_size']} queries at "
             f"{first['config']['max_length']} tokens, the `{suite}` suite")
    for v in verdicts:  # each record carries what it is about, for a headline copied from it alone
        v["scale"], v["n_seeds"] = scale, len(v["seeds"])

    results = {"title": title, "suite": suite, "environments": envs, "commands": commands, "summaries": summaries,
               "equivalence_margin": EQUIVALENCE_MARGIN, "n_resamples": n_boot, "scale": scale,
               "chance_levels": chance,
               "holm_families": {
                   "p_holm": f"the {len(made)} verdicts' difference p-values",
                   "p_tost_holm": f"the {len(made)} verdicts' equivalence (TOST) p-values",
                   "wilcoxon.p_holm": f"the {sum(w['p_floor'] <= ALPHA for w in wil)} Wilcoxon tests that can reach {ALPHA}",
                   "per_item.p_holm": f"the {sum(t['p_floor'] <= ALPHA for t in tests)} per-item tests that can reach {ALPHA}"},
               "verdicts": verdicts,
               "comparisons": [{"label": label, "a": a, "b": b, "family": family, **c} for label, a, b, family, c in compared]}

    md += ["", "## Verdicts", "",
           f"Effect = first minus second, family average over the seeds both configurations have (configurations at one "
           f"seed share data order and dropout draws). CIs: hierarchical bootstrap, {n_boot} resamples of the "
           f"shared seeds and, within each drawn seed, of each dataset's items (the same items for both); from 2 "
           f"shared seeds on, also Student's t over the per-seed effects (seed t), which pays for few seeds but not for "
           f"the items every seed shares. Verdict: **equivalent** if every 90% CI lies inside +/-{EQUIVALENCE_MARGIN:g} "
           f"(two one-sided tests at {ALPHA}; the margin is fixed in eval/verdict.py before the runs), **different** "
           f"if every 95% CI excludes 0, otherwise **undecided at this precision**; undecided too when a dataset has "
           f"too few items to resample. p: the larger of the two tests' two-sided p for a difference; TOST p: the "
           f"largest one-sided p for equivalence; each with its Holm adjustment over the {len(made)} verdicts of this "
           f"report in brackets (one family of tests for each).", "",
           "| comparison | family | seeds | effect | 95% CI | 90% CI | seed t 95% CI | p (Holm) | TOST p (Holm) | verdict |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for v in verdicts:
        shared = ", ".join(map(str, v["seeds"])) or "none shared"
        if v["verdict"] is None:
            md.append(f"| {v['comparison']} ({v['a']} vs {v['b']}) | {v['family']} | {shared} | {v['diff']:+.4f} | | | | | | no verdict: {v['why']} |")
            continue
        md.append(f"| {v['comparison']} ({v['a']} vs {v['b']}) | {v['family']} | {shared} | {v['effect']:+.4f} | "
                  f"{_ci(v['ci95'])} | {_ci(v['ci90'])} | {_ci(v['seed_t']['ci95']) if v['seed_t'] else ''} | "
                  f"{v['p_value']:.4f} ({v['p_holm']:.4f}) | "
                  f"{v['p_tost']:.4f} ({v['p_tost_holm']:.4f}) | {v['verdict']}"
                  + (" (too few items)" if v["why"].startswith("too few") else "") + " |")

    pilots = sorted({v["comparison"] for v in made if len(v["seeds"]) < 2})
    md += ["", "## Reading", "",
           f"Generated from the verdicts above by fixed rules (eval/report.py `reading`). Scale: {scale}; these "
           f"verdicts are about this model and budget, not about MLTP at the paper's scale (a 7B model, full training, "
           f"the full MTEB sets). A comparison at one seed is a pilot: its CI cannot see seed-to-seed variation"
           + (f" ({len(pilots)} of the comparisons here)" if pilots else "") + ". At 2-3 seeds the seed level of the "
           "bootstrap has few distinct draws and its CI is a lower bound on the uncertainty; the seed-level t interval "
           "beside it pays for the few seeds, and a verdict holds under both.", ""]
    md += [f"- {reading(v, _family_chance(v, chance))}" for v in verdicts]

    md += ["", "## The paper's test: Wilcoxon signed-rank over datasets", "",
           f"Pairs: one dataset's main score, mean over the shared seeds. With n datasets no two-sided p can fall below "
           f"2/2^n (n=8: 0.0078, n=5: 0.0625, n=3: 0.25, n=2: 0.5): where that floor is above {ALPHA} the test cannot "
           f"reject whatever the effect, and a p at its floor is marked. Holm: over the {sum(w['p_floor'] <= ALPHA for w in wil)} "
           f"tests of this table that can reach {ALPHA}. Per-item: datasets where a per-item test (below) finds the first "
           f"better / worse at Holm-adjusted p < {ALPHA}, at any seed.", "",
           "| comparison | family | datasets | diff | p | p (Holm) | per-item better / worse / n |", "|---|---|---|---|---|---|---|"]
    for (label, a, b, family, c) in compared:
        w = c["wilcoxon"]
        n = len(c["datasets"])
        better = sum(any(t["p_holm"] < ALPHA and t["diff"] > 0 for t in ts) for ts in c["per_item"].values())
        worse = sum(any(t["p_holm"] < ALPHA and t["diff"] < 0 for t in ts) for ts in c["per_item"].values())
        ph = "" if math.isnan(w["p_holm"]) else f"{w['p_holm']:.4f}"
        md.append(f"| {label} ({a} vs {b}) | {family} | {n} | {c['diff']:+.4f} | {_fmt_p(w['p_value'], w['p_floor'], n, 'datasets')} | "
                  f"{ph} | {better} / {worse} / {n} |")

    m = sum(t["p_floor"] <= ALPHA for t in tests)
    md += ["", "## Per-item tests, every shared seed", "",
           f"Within one dataset at one seed: paired bootstrap CI over items, paired permutation p (items swapped between "
           f"the two; STS swaps each model's rank of the pair), 2000 resamples each; a p within 3 resamples of its Monte "
           f"Carlo floor 1/(1 + resamples) is recomputed with {40 * m} permutations so that Holm can tell it apart. "
           f"A dataset with n <= 5 items cannot reach p < {ALPHA} (floor 2/2^n) and gets no p. Holm: over the {m} "
           f"tests in this section that can reach {ALPHA}."]
    for (label, a, b, family, c) in compared:
        if not c["per_item"]:
            continue
        md += ["", f"### {label} ({a} vs {b}), {family}", "", "| dataset | seed | n | diff | 95% CI | p | p (Holm) |", "|---|---|---|---|---|---|---|"]
        for name, ts in c["per_item"].items():
            for t in ts:
                unit = ITEM_WORD.get(family, "items")
                ph = "" if math.isnan(t["p_holm"]) else f"{t['p_holm']:.4f}"
                ci = f"[{t['ci_low']:+.4f}, {t['ci_high']:+.4f}]" if t["p_floor"] <= ALPHA else "too few to resample"
                md.append(f"| {name} | {t['seed']} | {t['n_items']} | {t['diff']:+.4f} | {ci} | "
                          f"{_fmt_p(t['p_value'], t['p_floor'], t['n_items'], unit)} | {ph} |")
    seeds = {len(s) for s in runs.values()}
    md += ["", "Caveats: " + ("one seed per configuration, so every verdict here is a pilot; " if seeds == {1} else "") +
           "per-item tests speak to one dataset at one seed; Monte Carlo p-values cannot go below 1/(1 + resamples).",
           "", "![scores per family](chart.svg)", ""]

    paths = {"markdown": out / "report.md", "json": out / "report.json", "chart": out / "chart.svg"}
    atomic_write_text(paths["chart"], bar_chart(summaries, families, title))
    atomic_write_text(paths["json"], json.dumps(results, indent=2, default=float) + "\n")
    atomic_write_text(paths["markdown"], "\n".join(md))
    return paths


def _resolve_small_p(compared: list, runs: dict[str, list[dict]], m: int) -> None:
    """Per-item p-values at or next to their Monte Carlo floor 1 / (1 + R) are recomputed with
    40 m permutations: Holm multiplies the smallest by m, so R = 2000 could never pass 0.05 over
    hundreds of tests, and 40 m puts that floor at 0.025 after adjustment."""
    more = max(40 * m, 1)
    for _, a, b, _, c in compared:
        by_a = {r["config"].get("seed"): r for r in runs[a]}
        by_b = {r["config"].get("seed"): r for r in runs[b]}
        for name, ts in c["per_item"].items():
            for t in ts:
                if t["p_floor"] <= ALPHA and t["p_value"] * (1 + t["n_permutations"]) <= 3 and more > t["n_permutations"]:
                    t["p_value"] = permutation_p(by_a[t["seed"]]["tasks"][name], by_b[t["seed"]]["tasks"][name],
                                                 n_resamples=more, seed=1)
                    t["n_permutations"] = more


def _verdict_record(label: str, a: str, b: str, family: str, c: dict) -> dict:
    """The machine-readable verdict of one comparison and family (report.json "verdicts")."""
    fx = c["effect"] or {}
    return {"comparison": label, "a": a, "b": b, "family": family, "verdict": fx.get("verdict"),
            "why": fx.get("why", c["no_effect"]), "effect": fx.get("effect"), "diff": c["diff"],
            "ci95": fx.get("ci95"), "ci90": fx.get("ci90"), "margin": EQUIVALENCE_MARGIN,
            "excludes_zero": fx.get("excludes_zero"), "seeds": c["seeds"], "per_seed": fx.get("per_seed"),
            "seed_t": fx.get("seed_t"), "p_boot": fx.get("p_boot"), "p_value": fx.get("p_value"), "p_holm": None, "p_tost": fx.get("p_tost"), "p_tost_holm": None,
            "datasets": c["datasets"], "n_items": fx.get("n_items"), "unshared_mixtures": c["unshared_mixtures"],
            "score_a": c["score_a"], "score_b": c["score_b"]}


def _family_chance(v: dict, chance: dict) -> float | None:
    if v["family"] != "clustering" or v["verdict"] is None or not all(n in chance for n in v["datasets"]):
        return None
    return statistics.fmean(chance[n]["level"] for n in v["datasets"])
