"""An exported model under mteb: mteb's own prompt lookup and evaluators give mltp's instructions
and mltp's scores.

mteb picks a SentenceTransformer's prompt by `{task}-{query|document}`, then the task name
(mteb.models.abs_encoder.get_prompt_name), with MTEB's task names. The scores are checked on
the STS tasks listed in OFFLINE (mteb handed the quick suite's pairs offline, as tests/test_mteb.py
does); retrieval's scoring path is written here but not yet passing. MTEB's
classification and clustering draw their own training samples and sets, so their scores differ
by design and only their prompts are checked.
"""
import dataclasses

import pytest
import torch

import eval as evaluators
from eval.tasks import QUICK, TASKS, build_task
from eval.retrieval import score_retrieval
from mltp.embedder import Embedder
from mltp.formats import gguf as mgguf
from mltp.formats.export import export, prompt_prefix, task_prompts

mteb = pytest.importorskip("mteb", reason="the MTEB tests need the `mteb` extra")
pytest.importorskip("sentence_transformers", reason="the export tests need the `st` extra")
from datasets import Dataset, DatasetDict  # noqa: E402  (installed with mteb)
from mteb.models.abs_encoder import get_prompt_name  # noqa: E402
from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper  # noqa: E402
from mteb.types import PromptType  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from test_export import lora_embedder  # noqa: E402

TEMPLATE = "Instruct: {instruction}\nQuery: {text}"
TOLERANCE = 1e-4  # README.md ("Use it elsewhere"): scores agree with MTEB's evaluators to four decimals
# The tasks whose scores agree to 1e-4 on shared vectors. Not yet: STS15, where the two evaluators
# rank near-tied cosines apart (3.5e-4 on the same vectors), and retrieval, whose query/document
# encode calls the recorder does not yet catch; their prompts are checked above all the same.
OFFLINE = ["STSBenchmark", "SICK-R", "STS12", "STS13", "STS14", "STS16", "BIOSSES"]


def sides(task):
    """(mteb prompt type, the prompt eval/ gives that side) for each side of the task."""
    prefix = prompt_prefix(TEMPLATE, task.instruction)
    if task.family == "retrieval":
        return [(PromptType.query, prefix), (PromptType.document, "")]  # documents go plain
    return [(None, prefix), (PromptType.query, prefix), (PromptType.document, prefix)]


@pytest.mark.parametrize("name", list(QUICK))
def test_mteb_finds_each_tasks_prompt_under_its_mteb_name(name):
    task, prompts = TASKS[name], task_prompts(TEMPLATE)
    metadata = mteb.get_task(task.mteb_name).metadata  # a KeyError here: not MTEB's name
    for prompt_type, expected in sides(task):
        found = get_prompt_name(prompts, metadata, prompt_type)
        assert (prompts[found] if found else "") == expected, (name, prompt_type, found)


def test_every_exported_prompt_is_valid_for_mteb():
    _, invalid = mteb.models.abs_encoder.AbsEncoder.validate_task_to_prompt_name(
        task_prompts(TEMPLATE), raise_for_invalid_keys=False)
    assert not invalid


def local_task(name, data):
    task = mteb.get_task(TASKS[name].mteb_name)
    if TASKS[name].family == "sts":
        task.dataset = {"default": DatasetDict({"test": Dataset.from_dict(
            {"sentence1": data.s1, "sentence2": data.s2, "score": [float(g) for g in data.gold]})})}
    else:
        task.dataset = {"default": {"test": {
            "queries": Dataset.from_dict({"id": list(data.queries), "text": list(data.queries.values())}),
            "corpus": Dataset.from_dict({"id": list(data.corpus), "text": list(data.corpus.values()),
                                         "title": [""] * len(data.corpus)}),  # our texts are whole
            "relevant_docs": data.qrels, "top_ranked": None}}}
    task.data_loaded = True  # mteb's load_data would reach the hub
    return task


def retrieval_subset(data, n_queries=16, n_distractors=32):
    """The quick suite's first queries, every document they judge and some others: the real
    model encodes long documents slowly on two cores."""
    queries = dict(list(data.queries.items())[:n_queries])
    judged = {d for q in queries for d in data.qrels[q]}
    others = [d for d in data.corpus if d not in judged][:n_distractors]
    corpus = {d: t for d, t in data.corpus.items() if d in judged or d in others}
    qrels = {q: data.qrels[q] for q in queries}
    return dataclasses.replace(data, queries=queries, corpus=corpus, qrels=qrels)


class Recording:
    """Records every (text, prompt) the export encodes under mteb, and serves those same vectors to
    eval/: both evaluators then score identical vectors, so a score difference is theirs, and a
    text eval/ asks for with a prompt mteb never used is a prompt mteb got wrong."""

    def __init__(self, st):
        self.st, self.seen = st, {}
        for name in ("encode", "encode_query", "encode_document"):
            setattr(st, name, self.recorder(getattr(st, name)))

    def recorder(self, encode):
        def wrapped(sentences, prompt=None, **kwargs):
            kwargs.update(convert_to_tensor=False, convert_to_numpy=True)
            out = encode(sentences, prompt=prompt, **kwargs)  # (N, D)
            texts = [sentences] if isinstance(sentences, str) else list(sentences)
            self.seen.update({(t, prompt or ""): torch.as_tensor(v) for t, v in zip(texts, out)})
            return out
        return wrapped

    def encode(self, texts, instruction=None, **kwargs):
        prompt = prompt_prefix(TEMPLATE, instruction) if instruction else ""
        missing = [t for t in texts if (t, prompt) not in self.seen]
        assert not missing, f"mteb never encoded {missing[0]!r} with the prompt {prompt!r}"
        return torch.stack([self.seen[(t, prompt)] for t in texts])  # (N, D)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    # The real model with mean pooling: its cosines spread (the tiny random model's crowd within
    # float32 rounding of each other, and then any two cosine codes rank them differently).
    tmp = tmp_path_factory.mktemp("mteb-export")
    embedder, lora = lora_embedder(str(mgguf.default_model_dir("smollm2-135m")), "mean", causal=True)
    embedder.config.template = TEMPLATE
    embedder.save(tmp / "final", lora)
    export(tmp / "final", tmp / "st", log=lambda _: None)
    return Embedder.load(tmp / "final"), SentenceTransformer(str(tmp / "st"), trust_remote_code=True, device="cpu")


@pytest.mark.parametrize("name", OFFLINE)
def test_mteb_scores_the_export_as_mltp_does(exported, data_dir, name):
    ours_model, st = exported
    recording, task = Recording(st), TASKS[name]
    data = build_task(name, data_dir, "quick")
    data = retrieval_subset(data) if task.family == "retrieval" else data
    theirs = local_task(name, data).evaluate(SentenceTransformerEncoderWrapper(st), split="test",
                                             encode_kwargs={"batch_size": 16})["default"]["main_score"]
    if task.family == "sts":
        ours = evaluators.evaluate(recording, tasks=[name], data_dir=data_dir, suite="quick",
                                   log=lambda _: None)[name]["main_score"]
    else:  # eval/'s scorer on the subset, queries with the instruction and documents plain, as eval/ does
        ours = score_retrieval(recording.encode(list(data.queries.values()), instruction=task.instruction),
                               recording.encode(list(data.corpus.values())), list(data.queries), list(data.corpus),
                               data.qrels, ignore_identical_ids=data.ignore_identical_ids)["main_score"]
    assert theirs == pytest.approx(ours, abs=TOLERANCE)
    assert abs(ours) > 1e-3  # a real score, not an empty evaluation
    # And those vectors are mltp's own: the export encodes as Embedder.encode (tests/test_export.py
    # checks every pooler kind; here on texts and prompts mteb sent).
    for (text, prompt), vector in list(recording.seen.items())[:8]:
        instruction = task.instruction if prompt else None
        assert prompt in ("", prompt_prefix(TEMPLATE, task.instruction))
        mine = ours_model.encode([text], instruction=instruction)[0]  # (D,)
        torch.testing.assert_close(vector.float(), mine, rtol=0, atol=1e-5 * mine.abs().max().item())
