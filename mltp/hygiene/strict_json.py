"""Strict JSON for results: NaN and infinity are not JSON, so they never reach a results file.

`json.dumps` writes a bare `NaN` by default, which most JSON readers reject. Here a non-finite
number becomes `null`, and the path of each one is returned so the record can say why it is null.
"""
from __future__ import annotations

import math


def finite_or_null(obj, path: str = "") -> tuple[object, list[str]]:
    """A copy of obj with every non-finite float replaced by None, and the paths replaced."""
    if isinstance(obj, float):
        return (obj, []) if math.isfinite(obj) else (None, [f"{path}: {obj}"])
    if isinstance(obj, dict):
        out, where = {}, []
        for k, v in obj.items():
            out[k], w = finite_or_null(v, f"{path}.{k}" if path else str(k))
            where += w
        return out, where
    if isinstance(obj, (list, tuple)):
        out, where = [], []
        for i, v in enumerate(obj):
            item, w = finite_or_null(v, f"{path}[{i}]")
            out.append(item)
            where += w
        return out, where
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # a numpy or torch scalar
        return finite_or_null(obj.item(), path)
    return obj, []
