"""Evaluators for text embeddings, MTEB-style, on the benchmark files in shared/data.

Any encoder with `encode(texts, instruction=None) -> (N, D)` can be evaluated. From mltp this
package takes only what training must share with it (the file opener and writer, the STS
instruction), never the model. The task half (registry, suites, evaluate) lives in eval/tasks.py, the metric
half in eval/{sts,retrieval,classification,clustering,stats}.py.
"""
from .tasks import (
    LEFT_OUT,
    QUICK,
    TASKS,
    evaluate,
    evaluation_texts,
    family_averages,
    list_tasks,
    resolve_data_dir,
    user_data_dir,
)

__all__ = ["LEFT_OUT", "QUICK", "TASKS", "evaluate", "evaluation_texts", "family_averages", "list_tasks",
           "resolve_data_dir", "user_data_dir"]
