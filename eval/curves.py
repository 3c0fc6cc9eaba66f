"""The training curves: each configuration's loss over steps, mean over its seeds with a seed band.

Every run records its loss per step in `train_history.jsonl` beside its results.json (one JSON
object per line: step, loss, ...). A step's loss is one batch's, so it jumps with the batch;
configurations at one seed share their batches (common random numbers), so the jumps are shared
and a running mean over a window of steps/20 shows the trend without hiding any gap between
configurations. Band: mean +/- one standard deviation over seeds of the smoothed curves (none at
one seed). One small panel per configuration, all on the same axes, the others in grey behind.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .svg import OKABE_ITO, document, text

PANEL_W, PANEL_H, PER_ROW = 300, 190, 4


def read_history(path: Path) -> list[tuple[int, float]]:
    rows = [json.loads(s) for s in Path(path).read_text(encoding="utf-8").splitlines() if s.strip()]
    return [(int(r["step"]), float(r["loss"])) for r in rows if "loss" in r]


def load_histories(out: Path, runs: dict[str, list[dict]]) -> dict[str, list[list[tuple[int, float]]]]:
    """{configuration: [(step, loss) per step] per seed} from `<out>/<name>/seed-<k>/train_history.jsonl`;
    configurations without trained runs (interventions, untrained) are left out."""
    found = {}
    for name, records in runs.items():
        curves = []
        for r in records:
            path = Path(out) / name / f"seed-{r['config'].get('seed')}" / "train_history.jsonl"
            if "intervention" not in r and path.exists():
                curves.append(read_history(path))
        if any(curves):
            found[name] = [c for c in curves if c]
    return found


def smooth(loss: np.ndarray, window: int) -> np.ndarray:
    """Centred running mean over `window` steps (fewer at the ends) -> the same length."""
    kernel = np.ones(window)
    return np.convolve(loss, kernel, "same") / np.convolve(np.ones(len(loss)), kernel, "same")


def band(curves: list[list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, sd) of the smoothed curves over the steps every seed has; sd 0 at one seed."""
    steps = sorted(set.intersection(*(set(s for s, _ in c) for c in curves)))
    window = max(1, len(steps) // 20)
    ys = np.stack([smooth(np.array([dict(c)[s] for s in steps]), window) for c in curves])  # (seeds, steps)
    return np.array(steps), ys.mean(axis=0), ys.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(len(steps))


def summary_rows(histories: dict[str, list[list[tuple[int, float]]]]) -> list[tuple[str, int, str, str]]:
    """(configuration, seeds, loss over the first tenth of steps, over the last tenth) as mean +/- sd over seeds."""
    rows = []
    for name, curves in histories.items():
        def tenth(first: bool) -> str:
            per_seed = [np.mean([loss for _, loss in (c[:max(1, len(c) // 10)] if first else c[-max(1, len(c) // 10):])])
                        for c in curves]
            return f"{np.mean(per_seed):.3f}" + (f" ± {np.std(per_seed, ddof=1):.3f}" if len(per_seed) > 1 else "")
        rows.append((name, len(curves), tenth(True), tenth(False)))
    return rows


def loss_chart(histories: dict[str, list[list[tuple[int, float]]]], title_text: str) -> str:
    """The SVG text of the small multiples (module note)."""
    bands = {name: band(curves) for name, curves in histories.items()}
    lo = min(float((m - s).min()) for _, m, s in bands.values())
    hi = max(float((m + s).max()) for _, m, s in bands.values())
    last = max(int(steps[-1]) for steps, _, _ in bands.values())
    rows = (len(bands) + PER_ROW - 1) // PER_ROW
    width, height = 20 + PER_ROW * PANEL_W, 60 + rows * (PANEL_H + 40)
    body = [text(width / 2, 24, title_text, "middle", font_size=15, font_weight="bold"),
            text(width / 2, 44, f"loss per step, running mean over {max(1, last // 20)} steps; line: mean over "
                 "seeds, band: +/- 1 SD over seeds; grey: the other configurations", "middle", fill="#333333")]
    for k, (name, (steps, mean, sd)) in enumerate(bands.items()):
        x0, y0 = 60 + (k % PER_ROW) * PANEL_W, 70 + (k // PER_ROW) * (PANEL_H + 40)
        w, h = PANEL_W - 70, PANEL_H - 30
        x = lambda s, x0=x0, w=w: x0 + w * (s - 1) / max(last - 1, 1)  # noqa: E731
        y = lambda v, y0=y0, h=h: y0 + h * (hi - v) / max(hi - lo, 1e-9)  # noqa: E731
        body.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#bbbbbb"/>')
        for other, (s2, m2, _) in bands.items():
            if other != name:
                body.append(_polyline(x, y, s2, m2, "#c8c8c8", 1.0))
        colour = OKABE_ITO[k % len(OKABE_ITO)]
        if sd.any():
            edge = [f"{x(s):.1f},{y(v):.1f}" for s, v in zip(steps, mean + sd)]
            edge += [f"{x(s):.1f},{y(v):.1f}" for s, v in zip(steps[::-1], (mean - sd)[::-1])]
            body.append(f'<polygon points="{" ".join(edge)}" fill="{colour}" fill-opacity="0.25" stroke="none"/>')
        body.append(_polyline(x, y, steps, mean, colour, 2.0))
        n = len(histories[name])
        body.append(text(x0 + w / 2, y0 - 6, f"{name} ({n} seed{'s' if n > 1 else ''})", "middle", font_weight="bold"))
        for v in (lo, (lo + hi) / 2, hi):
            body.append(text(x0 - 4, y(v) + 4, f"{v:.2f}", "end", font_size=10, fill="#444444"))
        for s in (1, last):
            body.append(text(x(s), y0 + h + 14, str(s), "middle", font_size=10, fill="#444444"))
        body.append(text(x0 + w / 2, y0 + h + 26, "step", "middle", font_size=10, fill="#444444"))
    return document(width, height, body)


def _polyline(x, y, steps, values, colour: str, width: float) -> str:
    pts = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in zip(steps, values))
    return f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="{width}"/>'
