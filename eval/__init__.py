"""Evaluators for text embeddings, MTEB-style, on the benchmark files in shared/data.

Any encoder with `encode(texts, instruction=None) -> (N, D)` can be evaluated. eval imports nothing
from mltp and never the model; `import eval` imports nothing at all until a name is used (the
names below load eval/tasks.py, which needs numpy; retrieval loads torch when it runs). The task
half (registry, suites, evaluate) lives in eval/tasks.py, the metric half in
eval/{sts,retrieval,classification,clustering}.py, the study's statistics in eval/crossed.py.
"""
from __future__ import annotations

import importlib

__all__ = ["LEFT_OUT", "QUICK", "TASKS", "evaluate", "evaluation_texts", "family_averages", "list_tasks",
           "resolve_data_dir", "user_data_dir"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module(".tasks", __name__), name)
    raise AttributeError(f"module 'eval' has no attribute {name!r}")
