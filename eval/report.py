"""The study's report: verdicts first, then the scores, the training curves and the finer tests.

Input: {configuration: [results.json of seed 0, seed 1, ...]} as written by run.py, and the study
folder (`out`), which may hold the study's `registration.json` (eval/families.py) and each run's
`train_history.jsonl`. Every comparison uses only the seeds its two configurations share
(`matched_seeds`). Per comparison and family, three layers of evidence, from the one the reading
rests on to the narrowest:
- the verdict (eval/verdict.py) from the crossed interval over seeds and items (eval/crossed.py),
  worded after the correction of its family of tests (eval/families.py: the registered primary
  family with Holm and the rest with Benjamini-Hochberg, or, unregistered, one Holm family);
- the paper's test: Wilcoxon signed-rank across the family's datasets (pairs = one dataset's
  main score, averaged over the shared seeds). With n datasets its two-sided p cannot go below
  2 / 2^n (eval.stats.sign_flip_floor): 0.0078 for 8, 0.0625 for 5, 0.25 for 3, 0.5 for 2;
- per-item paired tests within each dataset at each shared seed (eval.stats.paired_test).
The last two are supplementary, each Holm-adjusted over its own tests that can reach 0.05.
Clustering scores are shown beside their chance level (eval.chance), read from the results or,
for runs that predate it, recomputed from the sets with the gold sizes on both sides.
Figures are hand-written SVG: the comparisons (eval/forest.py) and the loss curves (eval/curves.py).
"""
from __future__ import annotations

import json
from datetime import datetime
import math
import statistics
from pathlib import Path

import numpy as np

from .chance import expected_v_measure
from .crossed import crossed_effect
from .curves import load_histories, loss_chart, summary_rows
from .families import adjust, commit_words, load_registration
from .forest import forest_chart
from .headline import headline
from .stats import holm, paired_test, permutation_p, sign_flip_floor, wilcoxon_signed_rank
from .textio import atomic_write_text
from .verdict import ALPHA, EQUIVALENCE_MARGIN, ONE_SEED, decide

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


def _per_item_tests(a: list[dict], b: list[dict], names: list[str], seeds: list) -> dict:
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
    return per_item


def compare(a: list[dict], b: list[dict], family: str) -> dict:
    a, b, seeds = matched_seeds(a, b)
    sa, sb = summarise(a), summarise(b)
    names = [n for n, t in sa["tasks"].items() if t["family"] == family and n in sb["tasks"]]
    x = [sa["tasks"][n]["mean"] for n in names]
    y = [sb["tasks"][n]["mean"] for n in names]
    out = {"datasets": names, "diff": statistics.fmean(x) - statistics.fmean(y) if names else math.nan, "seeds": seeds,
           "score_a": statistics.fmean(x) if names else math.nan, "score_b": statistics.fmean(y) if names else math.nan,
           "unshared_mixtures": unshared_mixtures(a, b, seeds)}
    out["wilcoxon"] = wilcoxon_signed_rank(x, y) | {"p_floor": sign_flip_floor(len(names))} if names else None
    out["per_item"] = _per_item_tests(a, b, names, seeds)
    spreads = [s for s in (sa["families"].get(family, {}).get("std"), sb["families"].get(family, {}).get("std")) if s is not None]
    out["seed_spread"] = max(spreads) if spreads else None
    out["effect"], out["no_effect"] = None, None
    if not names:
        out["no_effect"] = "no dataset in common"
    elif not seeds:
        out["no_effect"] = "no seed in common: the crossed interval pairs runs by seed"
    else:
        try:
            fx = crossed_effect(a, b, names, EQUIVALENCE_MARGIN)
            out["effect"] = fx | decide(fx)
        except (KeyError, ValueError) as e:
            out["no_effect"] = f"per-item scores unusable: {e}"
    return out


def _verdict_record(label: str, a: str, b: str, family: str, c: dict, scale: str) -> dict:
    """The machine-readable verdict of one comparison and family (report.json "verdicts")."""
    fx = c["effect"] or {}
    return {"comparison": label, "a": a, "b": b, "family": family, "verdict": fx.get("verdict"),
            "why": fx.get("why", c["no_effect"]), "effect": fx.get("effect"), "diff": c["diff"],
            "ci95": fx.get("ci95"), "ci90": fx.get("ci90"), "se": fx.get("se"), "df": fx.get("df"),
            "components": fx.get("components"), "items_only": fx.get("items_only"), "margin": EQUIVALENCE_MARGIN,
            "excludes_zero": fx.get("excludes_zero"), "seeds": c["seeds"], "n_seeds": len(c["seeds"]),
            "per_seed": fx.get("per_seed"), "p_value": fx.get("p_value"), "p_tost": fx.get("p_tost"),
            "p_low": fx.get("p_low"), "p_high": fx.get("p_high"), "datasets": c["datasets"],
            "n_items": fx.get("n_items"), "unshared_mixtures": c["unshared_mixtures"],
            "score_a": c["score_a"], "score_b": c["score_b"], "scale": scale}


def _fmt_p(p: float, floor: float, n: int, unit: str) -> str:
    """A p-value as the report prints it: never a floor passed off as evidence."""
    if floor > ALPHA:
        return f"cannot reject with {n} {unit}"
    if p <= floor * (1 + 1e-9):
        return f"{p:.4f} (at its floor)"
    return f"{p:.1e}" if p < 0.001 else f"{p:.3f}"


def _ci(ci) -> str:
    return f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"


def _p(p, adj) -> str:
    fmt = lambda x: f"{x:.1e}" if x < 0.001 else f"{x:.4f}"  # noqa: E731
    return "" if p is None else f"{fmt(p)} ({fmt(adj)})" if adj is not None else fmt(p)


def reading(v: dict, chance: float | None = None) -> str:
    """One sentence per comparison and family, from the verdict record by fixed rules."""
    head = f"{v['comparison']} ({v['a']} vs {v['b']}), {v['family']}"
    if v["verdict"] is None:
        return f"{head}: no verdict ({v['why']})."
    n = len(v["seeds"])
    if n < 2:
        ci = (v.get("items_only") or {}).get("ci95")
        return (f"{head}: **{v['verdict_corrected']}**; effect {v['effect']:+.4f}"
                + (f", items-only 95% CI {_ci(ci)}" if ci else "") + f"; one seed ({v['seeds'][0]}): a pilot.")
    ahead = sum(e > 0 for e in v["per_seed"])
    role = {"primary": f"primary, {v.get('primary_test')} test", "secondary": "secondary"}.get(v.get("role"), "")
    word = v["verdict_corrected"] + (" (provisional: a tail p at fewer than 8 seeds)" if v.get("provisional") else "")
    text = (f"{head}: **{word}**" + (f" ({role})" if role else "") + f"; before correction "
            f"{v['verdict']} ({v['why']}); effect {v['effect']:+.4f}, 95% CI {_ci(v['ci95'])}, 90% CI "
            f"{_ci(v['ci90'])}, {v['df']:.1f} df, margin +/-{v['margin']:g}; {n} seeds "
            f"({', '.join(map(str, v['seeds']))}), {v['a']} ahead at {ahead} of {n}")
    if v["verdict"] == "equivalent" and v["excludes_zero"]:
        text += "; the 95% CI excludes 0: a real difference, smaller than the margin"
    if v.get("unshared_mixtures"):
        text += (f"; at seed {', '.join(map(str, v['unshared_mixtures']))} the two trained on different mixtures, "
                 "so they do not share their data order there")
    if chance is not None:
        text += f"; chance level {chance:.3f}, which {v['a']} exceeds by {v['score_a'] - chance:+.3f} and {v['b']} by {v['score_b'] - chance:+.3f}"
    return text + "."


def _verdict_row(v: dict, primary: bool) -> str:
    """One table row: effect, 95% CI, 90% CI, df, the tests (primary: its test, p (Holm), the other
    test's p (BH); otherwise p and TOST p, each adjusted), the verdict after correction."""
    seeds = ", ".join(map(str, v["seeds"])) or "none shared"
    blank = [""] * (3 if primary else 2)
    if v["verdict"] is None:
        cells = [f"{v['diff']:+.4f}", "", "", ""] + blank + [f"no verdict: {v['why']}"]
    elif v["verdict"] == ONE_SEED:
        ci = (v.get("items_only") or {}).get("ci95")
        cells = [f"{v['effect']:+.4f}", "items only " + _ci(ci) if ci else "", "", ""] + blank + [v["verdict_corrected"]]
    else:
        if primary:
            key, other = ("p_tost", "p_value") if v["primary_test"] == "equivalence" else ("p_value", "p_tost")
            tests = [v["primary_test"], _p(v[key], v[key + "_adj"]), _p(v[other], v[other + "_adj"])]
        else:
            tests = [_p(v["p_value"], v["p_value_adj"]), _p(v["p_tost"], v["p_tost_adj"])]
        word = v["verdict_corrected"] + (" (provisional)" if v.get("provisional") else "")
        cells = [f"{v['effect']:+.4f}", _ci(v["ci95"]), _ci(v["ci90"]), f"{v['df']:.1f}"] + tests + [word]
    return f"| {v['comparison']} ({v['a']} vs {v['b']}) | {v['family']} | {seeds} | " + " | ".join(cells) + " |"


def _verdict_tables(verdicts: list[dict], registration: dict | None, families_made: list[dict]) -> list[str]:
    sizes = {f["name"]: f["tests"] for f in families_made}
    primary = [v for v in verdicts if v["role"] == "primary"]
    rest = [v for v in verdicts if v["role"] != "primary"]
    common = ("| comparison | family | seeds | effect | 95% CI | 90% CI | df | ", "|---|---|---|---|---|---|---|")
    md = []
    if registration:
        missing = [f"{t['question']} ({t['a']} vs {t['b']})" for t in registration["primary"]["tests"]
                   if not any((v["a"], v["b"]) == (t["a"], t["b"]) for v in primary)]
        md += ["## Primary verdicts", "",
               f"Registered in `{Path(registration['path']).name}`, {commit_words(registration)}: "
               f"{registration.get('what', '')} p: the registered test's p-value, "
               + (f"Holm-adjusted over the {sizes['primary (Holm)']} primary tests made in brackets." if sizes.get("primary (Holm)")
                  else "none made here (one seed: no interval, so no test)."), "",
               common[0] + "test | p (Holm) | other test's p (BH) | verdict |", common[1] + "---|---|---|---|"]
        md += [_verdict_row(v, True) for v in primary]
        md += ([f"", f"Registered but not measured in this folder: {'; '.join(missing)}."] if missing else [])
        title, note = "## Secondary verdicts", (
            "Secondary: every other comparison and family, and each primary comparison's other test. p: the "
            "two-sided p for a difference; TOST p: the larger one-sided p against the margin; each "
            "Benjamini-Hochberg-adjusted in brackets, over the secondary tests of its kind "
            f"({', '.join(f'{n}: {k}' for n, k in sizes.items() if n.startswith('secondary'))}).")
    else:
        title, note = "## Verdicts", (
            f"Nothing was registered in advance for this folder (no `registration.json`), so every verdict "
            f"is one family: p (two-sided, for a difference) and TOST p (the larger one-sided p against the "
            f"margin), each Holm-adjusted over the report's verdicts in brackets "
            f"({', '.join(f'{n}: {k}' for n, k in sizes.items())}).")
    md += ["", title, "", note, "", common[0] + "p (adj.) | TOST p (adj.) | verdict |", common[1] + "---|---|---|"]
    return md + [_verdict_row(v, False) for v in rest]


def _context(runs: dict[str, list[dict]], title: str, commands: list[str], sweep_seconds: float | None) -> dict:
    """What the report says about its runs: families, summaries, scale, machines, code, dates."""
    first = next(iter(runs.values()))[0]
    cfg = first["config"]
    # Runs may come from several sessions: name every machine and code revision, never just one.
    envs = [s["environment"] for seeds in runs.values() for s in seeds]
    # One forward per step or three (mltp.train joint_forward): the same model and loss, different
    # dropout noise; runs from before the option existed made three.
    forwards = [("joint forward" if s["config"].get("joint_forward") else "separate forwards")
                for seeds in runs.values() for s in seeds if s["config"].get("steps") and not s["config"].get("eval_only")]
    return {"title": title, "commands": commands, "sweep_seconds": sweep_seconds, "first": first,
            "suite": first["suite"], "families": _families(runs), "envs": envs,
            "summaries": {name: summarise(seeds) for name, seeds in runs.items()},
            "scale": (f"{cfg['model']}, {cfg['steps']} steps x {cfg['batch_size']} queries at {cfg['max_length']} "
                      f"tokens, the `{first['suite']}` suite"),
            "forwards": ", ".join(f"{m} ({forwards.count(m)} run{'s' if forwards.count(m) > 1 else ''})"
                                  for m in sorted(set(forwards))),
            "minutes": sum(s["seconds"]["total"] for seeds in runs.values() for s in seeds) / 60}


def _runs_after(registration: dict, envs: list[dict]) -> str:
    if not registration.get("commit_date"):
        return ""
    when = datetime.fromisoformat(registration["commit_date"])
    after = sum(datetime.fromisoformat(e["date"]) > when for e in envs)
    return f" {after} of the {len(envs)} runs here are dated after that commit."


def _header(ctx: dict, runs: dict[str, list[dict]], registration: dict | None) -> list[str]:
    seeds = sorted({len(s) for s in runs.values()})
    seed_text = ("one seed per configuration: a pilot, and no verdict is made from one seed" if seeds == [1]
                 else "seeds per configuration: " + ", ".join(map(str, seeds)))
    reg = (f"Pre-registered: `registration.json`, {commit_words(registration)}." + _runs_after(registration, ctx["envs"])
           if registration else "Not pre-registered: this folder has no `registration.json`.")
    return [f"# {ctx['title']}", "",
            f"Scale: {ctx['scale']}; {seed_text}. {reg} Machines, code and commands: `Runs`, at the end.", "",
            "How to read: effect = first minus second, the family average (mean over the family's datasets of "
            "the main score) over the seeds both configurations share. Interval: Student's t with Satterthwaite's "
            "degrees of freedom on the crossed variance, the seed variance over the shared seeds plus the variance "
            "of the items every seed was scored on (eval/crossed.py); one seed gives no seed variance, so no "
            f"interval and no verdict. Verdict: **equivalent** if the 90% CI lies inside +/-{EQUIVALENCE_MARGIN:g} "
            f"(TOST at {ALPHA}; the margin is fixed in eval/verdict.py), **different** if the 95% CI excludes 0, "
            "each only where its adjusted p is below 0.05; a verdict that holds only before adjustment reads "
            "\"nominal\"; a family with a dataset of 5 items or fewer stays undecided. At fewer than 8 seeds a "
            "surviving verdict whose adjusted p, 20 times larger, would reach 0.05 is marked provisional: there the t "
            "reference makes p-values below 0.001 too small (results/crossed-coverage.md).", ""]


def _score_tables(ctx: dict, runs: dict[str, list[dict]], chance: dict) -> list[str]:
    families, summaries = ctx["families"], ctx["summaries"]
    md = ["## Scores per family (main score averaged over the family's datasets; ± = std over seeds)", "",
          "W moved: how far training moved the layer-weight table, ||W_end - W_start|| / ||W_start|| "
          "(results.json `train.layer_table.relative_change`), per seed; a table that starts at zero "
          "shows `0 -> ||W_end||`.", "",
          "| configuration | seeds | " + " | ".join(families) + " | W moved |", "|---|---|" + "---|" * (len(families) + 1)]
    for name, s in summaries.items():
        cells = ["" if not (st := s["families"].get(f)) else f"{st['mean']:.4f}" + (f" ± {st['std']:.4f}" if st["std"] else "")
                 for f in families]
        md.append(f"| {name} | {len(runs[name])} | " + " | ".join(cells + [", ".join(layer_table_moves(runs[name]))]) + " |")
    if chance:
        fam = statistics.fmean(c["level"] for c in chance.values())
        md += ["", f"Clustering's chance level (the expected V-measure of a random partition with the same cluster sizes, "
                   f"eval.chance) averages {fam:.4f} over its datasets: read clustering scores against it, not against 0."]
    tasks = next(iter(summaries.values()))["tasks"]
    names = [t for f in families for t, info in tasks.items() if info["family"] == f]
    n_items = {t: next((s["tasks"][t].get("n_items") for seeds in runs.values() for s in seeds if t in s["tasks"]), "")
               for t in names}
    md += ["", "## Scores per dataset (main score, mean over seeds; configurations as rows, as MTEB's leaderboard)", "",
           "n: the items a dataset's score rests on (pairs, queries, test items, clustering sets); chance: clustering only.", "",
           "| configuration | " + " | ".join(f"{t} ({tasks[t]['family']})" for t in names) + " |", "|---" * (len(names) + 1) + "|",
           "| n | " + " | ".join(str(n_items[t] or "") for t in names) + " |",
           "| chance | " + " | ".join(f"{chance[t]['level']:.4f}" if t in chance else "" for t in names) + " |"]
    for name, s in summaries.items():
        md.append(f"| {name} | " + " | ".join(f"{s['tasks'][t]['mean']:.4f}" if t in s["tasks"] else "" for t in names) + " |")
    return md


def _training_section(histories: dict) -> list[str]:
    if not histories:
        return []
    md = ["", "## Training", "", "![loss curves](training.svg)", "",
          "Loss (InfoNCE) of each configuration's runs, from their `train_history.jsonl`: the mean over the first and "
          "over the last tenth of the steps, mean ± std over seeds.", "",
          "| configuration | seeds | loss, first tenth | loss, last tenth |", "|---|---|---|---|"]
    return md + [f"| {name} | {n} | {first} | {last} |" for name, n, first, last in summary_rows(histories)]


def _reading_section(verdicts: list[dict], chance: dict, scale: str) -> list[str]:
    pilots = sorted({v["comparison"] for v in verdicts if v["verdict"] == ONE_SEED})
    md = ["", "## Reading", "",
          f"Generated from the verdicts above by fixed rules (eval/report.py `reading`). Scale: {scale}; these "
          f"verdicts are about this model and budget, not about MLTP at the paper's scale (a 7B model, full training, "
          f"the full MTEB sets). A comparison at one seed is a pilot: it has no seed variance, so no interval and no "
          f"verdict" + (f" ({len(pilots)} of the comparisons here)" if pilots else "") + ".", ""]
    return md + [f"- {reading(v, _family_chance(v, chance))}" for v in verdicts]


def _wilcoxon_section(compared: list) -> list[str]:
    m = sum(c["wilcoxon"]["p_floor"] <= ALPHA for *_, c in compared)
    md = ["", "## Supplementary: the paper's test, Wilcoxon signed-rank over datasets", "",
          f"Pairs: one dataset's main score, mean over the shared seeds. With n datasets no two-sided p can fall below "
          f"2/2^n (n=8: 0.0078, n=5: 0.0625, n=3: 0.25, n=2: 0.5): where that floor is above {ALPHA} the test cannot "
          f"reject whatever the effect, and a p at its floor is marked. Holm: over the {m} tests of this table that "
          f"can reach {ALPHA}. Per-item: datasets where a per-item test (below) finds the first better / worse at "
          f"Holm-adjusted p < {ALPHA}, at any seed.", "",
          "| comparison | family | datasets | diff | p | p (Holm) | per-item better / worse / n |", "|---|---|---|---|---|---|---|"]
    for (label, a, b, family, c) in compared:
        w, n = c["wilcoxon"], len(c["datasets"])
        better = sum(any(t["p_holm"] < ALPHA and t["diff"] > 0 for t in ts) for ts in c["per_item"].values())
        worse = sum(any(t["p_holm"] < ALPHA and t["diff"] < 0 for t in ts) for ts in c["per_item"].values())
        ph = "" if math.isnan(w["p_holm"]) else f"{w['p_holm']:.4f}"
        md.append(f"| {label} ({a} vs {b}) | {family} | {n} | {c['diff']:+.4f} | {_fmt_p(w['p_value'], w['p_floor'], n, 'datasets')} | "
                  f"{ph} | {better} / {worse} / {n} |")
    return md


def _per_item_section(compared: list, m: int) -> list[str]:
    md = ["", "## Supplementary: per-item tests, every shared seed", "",
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
                ph = "" if math.isnan(t["p_holm"]) else f"{t['p_holm']:.4f}"
                ci = f"[{t['ci_low']:+.4f}, {t['ci_high']:+.4f}]" if t["p_floor"] <= ALPHA else "too few to resample"
                md.append(f"| {name} | {t['seed']} | {t['n_items']} | {t['diff']:+.4f} | {ci} | "
                          f"{_fmt_p(t['p_value'], t['p_floor'], t['n_items'], ITEM_WORD.get(family, 'items'))} | {ph} |")
    return md


def _runs_section(ctx: dict, runs: dict[str, list[dict]]) -> list[str]:
    cfg, envs = ctx["first"]["config"], ctx["envs"]
    machines = sorted({f"{e['device']}, torch {e['torch']}" for e in envs})
    codes = sorted({e["git_revision"][:12] + (" (uncommitted changes)" if e.get("git_dirty") else "") for e in envs})
    dates = sorted(e["date"] for e in envs)
    sweep = ctx["sweep_seconds"]
    return ["", "## Runs", "",
            f"Machine: {'; '.join(machines)}. Code: {', '.join(codes)}. Runs dated {dates[0]}"
            f"{f' to {dates[-1]}' if dates[-1] != dates[0] else ''}. Suite: `{ctx['suite']}`. Model: `{cfg['model']}`. "
            f"Training: {cfg['steps']} steps x {cfg['batch_size']} queries, lr {cfg['lr']}, max {cfg['max_length']} tokens"
            + (f", {ctx['forwards']} per step" if ctx["forwards"] else "") + ". "
            f"Runs: {sum(len(s) for s in runs.values())} ({ctx['minutes']:.0f} min of compute"
            + (f", this sweep session {sweep / 60:.0f} min" if sweep else "") + ").", "",
            "Reproduce: " + "; ".join(f"`{c}`" for c in ctx["commands"]), "",
            "Caveats: per-item tests speak to one dataset at one seed; Monte Carlo p-values cannot go below "
            "1/(1 + resamples).", ""]


def _adjust_supplementary(compared: list, runs: dict[str, list[dict]]) -> list[dict]:
    """Holm over the Wilcoxon tests that can reach ALPHA, and over the per-item tests that can."""
    wil = [c["wilcoxon"] for *_, c in compared]
    for w, p in zip(wil, holm([w["p_value"] if w["p_floor"] <= ALPHA else math.nan for w in wil])):
        w["p_holm"] = p
    tests = [t for *_, c in compared for ts in c["per_item"].values() for t in ts]
    m = sum(t["p_floor"] <= ALPHA for t in tests)
    _resolve_small_p(compared, runs, m)
    for t, p in zip(tests, holm([t["p_value"] if t["p_floor"] <= ALPHA else math.nan for t in tests])):
        t["p_holm"] = p
    return [{"name": "supplementary: Wilcoxon over datasets (Holm)", "tests": sum(w["p_floor"] <= ALPHA for w in wil)},
            {"name": "supplementary: per-item tests (Holm)", "tests": m}]


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


def write_report(runs: dict[str, list[dict]], out: Path, *, comparisons: list[tuple[str, str, str]], title: str,
                 commands: list[str], sweep_seconds: float | None = None, histories: dict | None = None) -> dict:
    """Write report.md, report.json, chart.svg and (with training histories) training.svg into `out`;
    histories default to the runs' `train_history.jsonl` under `out` (eval/curves.py)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    registration = load_registration(out)
    ctx = _context(runs, title, commands, sweep_seconds)
    compared = [(label, a, b, family, c) for label, a, b in comparisons for family in ctx["families"]
                if (c := compare(runs[a], runs[b], family))["datasets"]]
    verdicts = [_verdict_record(label, a, b, family, c, ctx["scale"]) for label, a, b, family, c in compared]
    families_made = adjust(verdicts, registration)
    supplementary = _adjust_supplementary(compared, runs)
    histories = load_histories(out, runs) if histories is None else histories
    chance = chance_levels(runs)
    md = (_header(ctx, runs, registration) + _verdict_tables(verdicts, registration, families_made)
          + ["", "## Headline", ""] + headline(verdicts, registration, ctx["scale"])
          + ["", "## The comparisons", "", "![every comparison's effect and intervals](chart.svg)", ""]
          + _score_tables(ctx, runs, chance) + _training_section(histories)
          + _reading_section(verdicts, chance, ctx["scale"]) + _wilcoxon_section(compared)
          + _per_item_section(compared, supplementary[1]["tests"]) + _runs_section(ctx, runs))
    results = {"title": title, "suite": ctx["suite"], "environments": ctx["envs"], "commands": commands,
               "summaries": ctx["summaries"], "equivalence_margin": EQUIVALENCE_MARGIN, "scale": ctx["scale"],
               "registration": registration, "chance_levels": chance, "families": families_made + supplementary,
               "verdicts": verdicts,
               "comparisons": [{"label": label, "a": a, "b": b, "family": family, **c} for label, a, b, family, c in compared]}
    paths = {"markdown": out / "report.md", "json": out / "report.json", "chart": out / "chart.svg"}
    atomic_write_text(paths["chart"], forest_chart([v for v in verdicts if v["effect"] is not None], ctx["families"],
                                                   title, EQUIVALENCE_MARGIN, _chart_subtitle(ctx, runs, registration)))
    if histories:
        paths["training"] = atomic_write_text(out / "training.svg", loss_chart(histories, f"{title}: training loss"))
    atomic_write_text(paths["json"], json.dumps(results, indent=2, default=float) + "\n")
    atomic_write_text(paths["markdown"], "\n".join(md))
    return paths


def _chart_subtitle(ctx: dict, runs: dict[str, list[dict]], registration: dict | None) -> str:
    seeds = sorted({len(s) for s in runs.values()})
    return (f"{ctx['scale']}; " + ("one seed: a pilot" if seeds == [1] else f"{'-'.join(map(str, (seeds[0], seeds[-1])))} seeds")
            + ("; corrections: Holm (primary), Benjamini-Hochberg (secondary)" if registration
               else "; correction: Holm over every verdict (nothing registered)"))


def _family_chance(v: dict, chance: dict) -> float | None:
    if v["family"] != "clustering" or v["verdict"] is None or not all(n in chance for n in v["datasets"]):
        return None
    return statistics.fmean(chance[n]["level"] for n in v["datasets"])


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


