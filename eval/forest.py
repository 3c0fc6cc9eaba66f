"""The study's chart: every comparison's effect with its intervals against the equivalence margin.

One row per comparison, grouped by the question it answers (the label's prefix: "blocks",
"layer weights", "head", "intervention", ...), one column per score family. In each cell: the effect
(dot), its 90% interval (thick bar: inside the shaded +/-margin band means equivalent) and 95%
interval (thin bar: clear of the zero line means different), coloured by the verdict after its
correction (eval.verdict.corrected); a hollow dot is a verdict that holds only before correction.
Each question and family has its own symmetric axis, labelled in the group's header row: the
effects the study is about span 0.001 (W on vs off) to 0.2 (which blocks), and one axis for all
would hide the small ones inside the margin band. Absolute scores are in report.md's tables.
"""
from __future__ import annotations

from .svg import document, line, nice_limit, text, title
from .verdict import NOMINAL_APART, NOMINAL_INSIDE, ONE_SEED, TOO_FEW

# verdict -> (colour, filled); the legend follows this order
STYLE = {
    "equivalent": ("#009E73", True),
    NOMINAL_INSIDE: ("#009E73", False),
    "different": ("#D55E00", True),
    NOMINAL_APART: ("#D55E00", False),
    "undecided": ("#666666", False),
    TOO_FEW: ("#AAAAAA", False),
    ONE_SEED: ("#0072B2", False),
}
ROW, HEAD, COL, GAP = 19, 30, 170, 18


def _groups(verdicts: list[dict]) -> dict[str, dict[str, dict]]:
    # {question: {row label: {family: record}}}, in the order the comparisons come
    groups: dict[str, dict[str, dict]] = {}
    for v in verdicts:
        question, _, rest = v["comparison"].partition(": ")
        label = rest if rest else question
        question = question if rest else "other"
        groups.setdefault(question, {}).setdefault(label, {})[v["family"]] = v
    return groups


def _interval(v: dict, level: str) -> list[float] | None:
    if v.get(level):
        return v[level]
    return (v.get("items_only") or {}).get(level)  # a pilot's items-only interval, drawn dashed


def _cell(v: dict, x, y: float) -> list[str]:
    colour, filled = STYLE.get(v["verdict_corrected"], ("#666666", False))
    dash = {"stroke_dasharray": "4,3"} if v["verdict_corrected"] == ONE_SEED else {}
    tip = title(f"{v['comparison']} ({v['a']} vs {v['b']}), {v['family']}: {v['verdict_corrected']}; effect "
                f"{v['effect']:+.4f}" + (f", 95% CI [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}]" if v.get("ci95") else ""))
    out = []
    ci95, ci90 = _interval(v, "ci95"), _interval(v, "ci90")
    if ci95:
        out.append(line(x(ci95[0]), y, x(ci95[1]), y, colour, 1.4, **dash))
    if ci90:
        out.append(line(x(ci90[0]), y, x(ci90[1]), y, colour, 4.5, stroke_opacity="0.2" if dash else "0.45"))
    out.append(f'<circle cx="{x(v["effect"]):.1f}" cy="{y:.1f}" r="3.6" fill="{colour if filled else "#ffffff"}" '
               f'stroke="{colour}" stroke-width="1.6">{tip}</circle>')
    return out


def _legend(y: float, margin: float) -> list[str]:
    out, x = [], 16.0
    for word, (colour, filled) in STYLE.items():
        out.append(f'<circle cx="{x + 5:.1f}" cy="{y - 4:.1f}" r="4" fill="{colour if filled else "#ffffff"}" '
                   f'stroke="{colour}" stroke-width="1.6"/>')
        out.append(text(x + 13, y, word))
        x += 24 + 6.6 * len(word)
    out.append(text(16, y + 20, f"dot: effect (first minus second); thick bar: 90% CI; thin bar: 95% CI; shaded: "
                    f"the +/-{margin:g} equivalence margin", fill="#333333"))
    out.append(text(16, y + 38, "hollow dot: a verdict that holds before its correction only; dashed: one seed, the "
                    "items-only interval of a pilot (no verdict)", fill="#333333"))
    return out


def _axis_limit(rows: dict[str, dict], family: str, margin: float) -> float:
    ends = [abs(e) for fams in rows.values() if family in fams
            for e in (_interval(fams[family], "ci95") or [fams[family]["effect"]])]
    return nice_limit(max(ends + [2 * margin]) * 1.04)


def forest_chart(verdicts: list[dict], families: list[str], title_text: str, margin: float, subtitle: str = "") -> str:
    """The SVG text of the chart (module note)."""
    groups = _groups(verdicts)
    if not groups:  # a folder with one configuration compares nothing
        return document(640, 60, [text(320, 34, f"{title_text}: no comparison to draw", "middle", font_size=14)])
    labels = [(label + (" (primary)" if any(v.get("role") == "primary" for v in fams.values()) else ""))
              for rows in groups.values() for label, fams in rows.items()]
    left = 16 + min(470, max(240, 6.7 * max(len(s) for s in labels)))
    width = left + len(families) * (COL + GAP) + 10
    body = [text(width / 2, 24, title_text, "middle", font_size=15, font_weight="bold"),
            text(width / 2, 44, subtitle, "middle", fill="#333333")] + _legend(70, margin)
    y = 136
    for c, family in enumerate(families):
        body.append(text(left + c * (COL + GAP) + COL / 2, y, family, "middle", font_size=13, font_weight="bold"))
    y += 8
    stripe = 0
    for question, rows in groups.items():
        body.append(text(16, y + 19, question, font_size=13, font_weight="bold"))
        top = y + HEAD - 6
        bottom = top + ROW * len(rows) + 4
        scales = {}
        for c, family in enumerate(families):
            x0, lim = left + c * (COL + GAP), _axis_limit(rows, family, margin)
            scales[family] = (lambda v, x0=x0, lim=lim: x0 + COL / 2 + v / lim * (COL / 2 - 6))
            x = scales[family]
            body.append(f'<rect x="{x(-margin):.1f}" y="{top:.1f}" width="{x(margin) - x(-margin):.1f}" '
                        f'height="{bottom - top:.1f}" fill="#9fd3bb" fill-opacity="0.45"/>')
            body.append(line(x(0), top, x(0), bottom, "#777777", 1))
            for tick, anchor in ((-lim, "start"), (0.0, "middle"), (lim, "end")):
                body.append(text(x(tick) + {"start": -4, "middle": 0, "end": 4}[anchor], y + 19,
                                 f"{tick:+g}" if tick else "0", anchor, font_size=10, fill="#444444"))
        y += HEAD
        for label, fams in rows.items():
            yc = y + ROW / 2 - 2
            if stripe % 2:
                body.insert(1, f'<rect x="8" y="{y - 2:.1f}" width="{width - 16:.1f}" height="{ROW}" fill="#f2f2f2"/>')
            stripe += 1
            primary = any(v.get("role") == "primary" for v in fams.values())
            body.append(text(24, yc + 4, label + (" (primary)" if primary else ""),
                             **({"font_weight": "bold"} if primary else {})))
            for family, v in fams.items():
                if family in scales:
                    body += _cell(v, scales[family], yc)
            y += ROW
        y += 10
    return document(width, y + 10, body)
