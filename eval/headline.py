"""The report's Headline: what the study found, in sentences written by fixed rules, to be copied
into the README as they stand.

Rules:
1. A verdict word, *equivalent* or *different*, appears only where the verdict survives its
   correction (eval/families.py: Holm over the registered primary family, Benjamini-Hochberg over
   the secondary tests; Holm over every verdict where nothing was registered).
2. A verdict that holds before correction only is written "nominal: inside the margin" or
   "nominal: excludes 0"; anything else "undecided", with the reason where it is one seed or too
   few items.
3. Every effect is printed with its 95% interval (a pilot's items-only interval, so marked); a
   surviving verdict that eval.verdict.provisional flags says "(provisional)".
4. Order: the registered primary tests as registered; then the secondary (or, unregistered, all)
   comparisons with a verdict that survives, in the report's order; then one line naming the
   comparisons whose verdicts are nominal only, and how many are undecided. A report whose
   comparisons all have one seed lists every comparison's effects, each "undecided (one seed)".
"""
from __future__ import annotations

from .families import commit_words
from .verdict import NOMINAL_APART, NOMINAL_INSIDE, ONE_SEED

SURVIVING = ("equivalent", "different")


def _cell(v: dict) -> str:
    word = v["verdict_corrected"]
    shown = (f"*{word}*" + (" (provisional)" if v.get("provisional") else "")) if word in SURVIVING else word
    if v.get("ci95"):
        interval = f"[{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}]"
    else:
        ci = (v.get("items_only") or {}).get("ci95")
        interval = f"items only [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "no interval"
    return f"{v['family']} {shown} ({v['effect']:+.4f}, {interval})"


def _by_comparison(verdicts: list[dict]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for v in verdicts:
        if v["effect"] is not None:
            out.setdefault((v["comparison"], v["a"], v["b"]), []).append(v)
    return out


def _seeds(verdicts: list[dict]) -> str:
    counts = sorted({len(v["seeds"]) for v in verdicts if v["effect"] is not None})
    if counts == [1]:
        return "one seed: a pilot, so no verdict is made"
    return " or ".join(map(str, counts)) + " seeds per comparison"


def _primary_lines(verdicts: list[dict], registration: dict) -> list[str]:
    lines = []
    made = [v for v in verdicts if v["role"] == "primary"]
    m = sum(v.get(("p_tost" if v["primary_test"] == "equivalence" else "p_value") + "_family") is not None for v in made)
    for t in registration["primary"]["tests"]:
        rows = [v for v in made if (v["a"], v["b"]) == (t["a"], t["b"])]
        head = f"- **{t['question']}** ({t['a']} vs {t['b']}; primary, {t['test']}" + (f", Holm over {m})" if m else ")")
        lines.append(head + (": " + "; ".join(_cell(v) for v in rows) if rows else ": not measured in this folder") + ".")
    return lines


def headline(verdicts: list[dict], registration: dict | None, scale: str) -> list[str]:
    """The Headline section's lines (module note)."""
    correction = ("Holm over the primary family, Benjamini-Hochberg over the secondary tests" if registration
                  else "Holm over every verdict of this report, since nothing was registered in advance")
    lines = [f"Scale: {scale}; {_seeds(verdicts)}. Written by fixed rules (eval/headline.py): a verdict word "
             f"appears only where the verdict survives its correction ({correction}); otherwise the cell says "
             f"\"nominal\" or \"undecided\". Effects are first minus second, with 95% intervals.", ""]
    groups = _by_comparison([v for v in verdicts if v["role"] != "primary"])
    pilot = all(v["verdict_corrected"] == ONE_SEED for rows in groups.values() for v in rows)
    if registration:
        lines += [f"Primary (registered, {commit_words(registration)}):"] + _primary_lines(verdicts, registration)
        lines += ["", "Secondary, effects only (one seed):" if pilot else "Secondary, surviving Benjamini-Hochberg:"]
    if pilot:  # no verdict to survive anything: every comparison's effects
        return lines + [f"- **{label}** ({a} vs {b}): " + "; ".join(_cell(v) for v in rows) + "."
                        for (label, a, b), rows in groups.items()]
    surviving = [(key, rows) for key, rows in groups.items() if any(v["verdict_corrected"] in SURVIVING for v in rows)]
    for (label, a, b), rows in surviving:
        lines.append(f"- **{label}** ({a} vs {b}): " + "; ".join(_cell(v) for v in rows) + ".")
    if not surviving:
        lines.append("- none.")
    nominal = [f"{label} ({', '.join(v['family'] for v in rows if v['verdict_corrected'] in (NOMINAL_INSIDE, NOMINAL_APART))})"
               for (label, _, _), rows in groups.items()
               if any(v["verdict_corrected"] in (NOMINAL_INSIDE, NOMINAL_APART) for v in rows)]
    flat = [v for rows in groups.values() for v in rows]
    undecided = sum(v["verdict_corrected"].startswith("undecided") for v in flat)
    pilots = sum(v["verdict_corrected"] == ONE_SEED for v in flat)
    lines.append(f"- Nominal only, not surviving the correction: {'; '.join(nominal) if nominal else 'none'}. "
                 f"Undecided: {undecided} of {len(flat)}" + (f" ({pilots} at one seed)" if pilots else "") + ".")
    return lines
