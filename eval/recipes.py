"""How each derived file of MANIFEST.md is made: derivation name, inputs, options.

MANIFEST.md describes derived files in prose; this table is that prose made exact, read by
scripts/manifest.py when it writes eval/manifest.json. A file whose source column is a plain
`owner/repo@commit:path` needs no recipe: it is that upstream file ("copy"), or its gunzipped
content when the upstream path ends in ".gz" and the file's does not. Keys are the files' names
without the ".gz" that marks how the data directory stores a large file.
"""
from __future__ import annotations

SYNWMD = "amao0o0/SynWMD@59042a92e862db58bd01e47914345d2f52d2a4a3"
ANSERINI = "castorini/anserini-tools@5b819c1a45c8a0a3ec9426f476694f44a29dfaf3"
AMLM = "dax44/AMLM@05fb2144cdac27a88f277b3969df58e2ae041af6"
TWEAC = "UKPLab/TWEAC-qa-agent-selection@ed4f0cafa87aefd4820cca0d7f4881d2de99a9f0"
NEWS20 = "YunomiXavia/20news-bydate@2298b3e1c9f66cc3f2d8bf6da5dd68f15b37eb88"
TWEETS = "spence998/Tweet-Sentiment-Predictor@16cc7c7d85ad379e93fab0fe4d4fa4f09d35604d"
SCIFACT_ZIP = "sumithra-p-v/claimverifier@c89fe399bf3e91aa4502b10d673b07db27891526:data/scifact.zip"
ARGUANA = ("cchang-vassar/Semantic-Relations-in-Vector-Embeddings@0adbf68360c0eff4be408baa0a94cc798cd67d71"
           ":arguana-counterargs-corpus/02-extracted-arguments/")

# STS subsets per year, in the order the staged *_combined.tsv lists them (file-name order).
STS_SUBSETS = {
    "sts/sts12/sts12_test_combined.tsv": ("sts/sts12/test/STS.{}.{}.txt",
                                          ["MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"]),
    "sts/sts12/sts12_train_combined.tsv": ("sts/sts12/train/STS.{}.{}.txt", ["MSRpar", "MSRvid", "SMTeuroparl"]),
    "sts/sts13/sts13_test_combined.tsv": ("sts/sts13/test/STS.{}.{}.txt", ["FNWN", "OnWN", "headlines"]),
    "sts/sts14/sts14_test_combined.tsv": ("sts/sts14/test/STS.{}.{}.txt",
                                          ["OnWN", "deft-forum", "deft-news", "headlines", "images", "tweet-news"]),
    "sts/sts15/sts15_test_combined.tsv": ("sts/sts15/test/STS.{}.{}.txt",
                                          ["answers-forums", "answers-students", "belief", "headlines", "images"]),
    "sts/sts16/sts16_test_combined.tsv": ("sts/sts16/test/STS2016.{}.{}.txt",
                                          ["answer-answer", "headlines", "plagiarism", "postediting", "question-question"]),
}


def _sts(template: str, names: list[str]) -> dict:
    inputs = [f"data:{template.format(kind, n)}" for n in names for kind in ("input", "gs")]
    return dict(derivation="sts_combined", inputs=inputs, options={"names": names})


def _beir(dataset: str, anserini_name: str) -> dict:
    return {
        f"retrieval/{dataset}/qrels/test.tsv": dict(
            derivation="trec_qrels_to_beir", inputs=[f"{ANSERINI}:qrels/qrels.beir-v1.0.0-{anserini_name}.test.txt"]),
        f"retrieval/{dataset}/queries_test.jsonl": dict(
            derivation="anserini_topics_to_beir",
            inputs=[f"{ANSERINI}:topics/topics.beir-v1.0.0-{anserini_name}.test.tsv.gz"]),
    }


RECIPES: dict[str, dict] = {
    "classification/imdb/test.jsonl": dict(
        derivation="imdb_jsonl", inputs=[f"{AMLM}:data/aclImdb/test/"], options={"splits": ["test"]}),
    "classification/imdb/train.jsonl": dict(
        derivation="imdb_jsonl", inputs=[f"{AMLM}:data/aclImdb/train/", f"{AMLM}:data/aclImdb/val/"],
        options={"splits": ["train", "val"]}),
    "classification/tweet_sentiment_extraction/train_no_selected_text.csv": dict(
        derivation="csv_rows", inputs=[f"{TWEETS}:tweet-sentiment-extraction/test.csv"],
        options={"start": 3535, "stop": 31014}),
    "clustering/reddit/reddit_test.tsv": dict(derivation="labelled_lines", inputs=[f"{TWEAC}:data/reddit/test/"]),
    "clustering/stackexchange/stackexchange_test.tsv": dict(
        derivation="labelled_lines", inputs=[f"{TWEAC}:data/stackexchange/test/"]),
    "clustering/twentynewsgroups/20news_bydate_subjects.tsv": dict(
        derivation="newsgroup_subjects",
        inputs=[f"{NEWS20}:20news-bydate/20news-bydate-train/", f"{NEWS20}:20news-bydate/20news-bydate-test/"]),
    "sts/biosses/biosses_test.tsv": dict(
        derivation="biosses_pairs", inputs=["data:sts/biosses/biosses_sentence_pairs.txt", "data:sts/biosses/biosses_scores.txt"]),
    "sts/sick-r/sick_all_9927.tsv": dict(
        derivation="sick_all",
        inputs=["data:sts/sick-r/SICK_train.txt", "data:sts/sick-r/SICK_trial.txt", "data:sts/sick-r/SICK_test_annotated.txt"]),
    "retrieval/scifact/corpus.jsonl": dict(derivation="scifact_corpus", inputs=[f"{SCIFACT_ZIP}!corpus_train.csv"]),
    "retrieval/scifact/queries_train.jsonl": dict(derivation="scifact_queries", inputs=[f"{SCIFACT_ZIP}!claims_train.csv"]),
    "retrieval/scifact/qrels/train.tsv": dict(derivation="scifact_qrels", inputs=[f"{SCIFACT_ZIP}!claims_train.csv"]),
    "training/mrpc/LICENCE.txt": dict(
        derivation="html_to_text", inputs=["brmson/dataset-sts@e1d3375f5b3bc24f21aa4e46f96eb379e9fc1081:data/para/msr/LICENCE.html"],
        options={"encoding": "shift_jis"}),  # the page's own <meta charset>
    "retrieval/arguana/corpus_reconstructed.jsonl": dict(
        derivation="arguana_corpus", inputs=[ARGUANA], options={"splits": ["test", "validation", "training"]}),
    **{file: _sts(*spec) for file, spec in STS_SUBSETS.items()},
    **_beir("arguana", "arguana"), **_beir("fiqa", "fiqa"), **_beir("nfcorpus", "nfcorpus"),
    **_beir("scifact", "scifact"), **_beir("touche2020", "webis-touche2020"),
    **_beir("scidocs", "scidocs"),
}
