"""The few SVG pieces the report's figures are written with: no plotting library, plain text out.

Every figure is a list of elements joined into one document; text is escaped here, so a label
with "&" or "<" cannot break the file. Colours are Okabe & Ito's (2008) palette, which readers with
the common colour-vision deficiencies can tell apart.
"""
from __future__ import annotations

import html
import math

OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]  # less its yellow: too pale for a line


def document(width: float, height: float, body: list[str], font_size: int = 12) -> str:
    return "\n".join([f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
                      f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="DejaVu Sans, Arial, sans-serif" '
                      f'font-size="{font_size}">', f'<rect width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>',
                      *body, "</svg>"]) + "\n"


def text(x: float, y: float, s: str, anchor: str = "start", **attrs) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{html.escape(str(v))}"' for k, v in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{html.escape(s)}</text>'


def line(x1: float, y1: float, x2: float, y2: float, stroke: str, width: float = 1.0, **attrs) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{stroke}" stroke-width="{width}"{extra}/>'


def title(s: str) -> str:
    """A tooltip: put inside an element, or as the element's first child."""
    return f"<title>{html.escape(s)}</title>"


def nice_limit(x: float) -> float:
    """The smallest of 1, 2, 3, 5 x 10^k that is >= x: an axis limit with round tick labels."""
    if not x > 0:
        return 1.0
    k = math.floor(math.log10(x))
    for m in (1, 2, 3, 5, 10):
        if m * 10 ** k >= x * (1 - 1e-9):
            return m * 10 ** k
    return 10 ** (k + 1)
