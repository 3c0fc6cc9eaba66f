"""Which data files each task reads (paths relative to the data folder, as in its MANIFEST.md).

Runs check these files against the manifest before any work, and decontamination reads only the
tasks a run evaluates. tests/test_run_contract.py builds every task from a folder that holds only
the files named here, so the table cannot fall behind the readers in eval/tasks.py.
"""
from __future__ import annotations

TASK_FILES: dict[str, tuple[str, ...]] = {
    "STSBenchmark": ("sts/stsbenchmark/sts-test.csv",),
    "SICK-R": ("sts/sick-r/sick_all_9927.tsv",),
    **{f"STS{y}": (f"sts/sts{y}/sts{y}_test_combined.tsv",) for y in (12, 13, 14, 15, 16)},
    "BIOSSES": ("sts/biosses/biosses_test.tsv",),
    "SciFact": tuple(f"retrieval/scifact/{f}" for f in ("queries_test.jsonl", "corpus.jsonl.gz", "qrels/test.tsv")),
    "ArguAna": tuple(f"retrieval/arguana/{f}" for f in ("queries_test.jsonl.gz", "corpus_reconstructed.jsonl.gz",
                                                         "qrels/test.tsv")),
    "Banking77": ("classification/banking77/train.csv", "classification/banking77/test.csv"),
    "Emotion": ("classification/emotion/train.txt.gz", "classification/emotion/test.txt"),
    "TweetSentimentExtraction": ("classification/tweet_sentiment_extraction/train_no_selected_text.csv.gz",
                                 "classification/tweet_sentiment_extraction/test.csv"),
    "AmazonCounterfactual": ("classification/amazon_counterfactual/en/EN_train.tsv",
                             "classification/amazon_counterfactual/en/EN_test.tsv"),
    "IMDB": ("classification/imdb/train.jsonl.gz", "classification/imdb/test.jsonl.gz"),
    "TwentyNewsgroups": ("clustering/twentynewsgroups/20news_bydate_subjects.tsv",),
    "Reddit": ("clustering/reddit/reddit_test.tsv.gz",),
    "StackExchange": ("clustering/stackexchange/stackexchange_test.tsv.gz",),
}


def task_files(names) -> list[str]:
    """The files the named tasks read, each once, in table order."""
    unknown = [n for n in names if n not in TASK_FILES]
    if unknown:
        raise ValueError(f"no file list for task(s) {unknown}: add them to eval/files.py")
    return list(dict.fromkeys(f for n in names for f in TASK_FILES[n]))
