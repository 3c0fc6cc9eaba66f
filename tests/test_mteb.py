"""eval.mteb_model: mteb's own evaluators, run offline on our data, score as eval/ does.

mteb's tasks download their data from the Hugging Face hub; here each task's `load_data` is
replaced by the same texts eval/ reads from ../shared/data (the quick suite's seeded subsets), so
both sides score the same model on the same items. A second, independent check of eval/'s STS
scoring against MTEB's code, to the tolerance eval/README.md states (four decimals).
"""
import pytest
import torch

import eval as evaluators
from eval.mteb_model import MTEBModel
from eval.tasks import TASKS, build_task
from mltp.formats.checkpoint import load_model
from mltp.embedder import Embedder, EmbedderConfig
from mltp.pooling import PoolerConfig, build_pooler
from mltp.tokenizer import load_tokenizer

mteb = pytest.importorskip("mteb", reason="the MTEB tests need the `mteb` extra")
from datasets import Dataset, DatasetDict  # noqa: E402  (installed with mteb)

TOLERANCE = 1e-4  # eval/README.md: STSBenchmark agrees with MTEB to four decimals


class Remembering:
    """The embedder, each (text, instruction) encoded once: both evaluators score the same vectors,
    so any difference is theirs, and the texts cost one forward."""

    def __init__(self, embedder):
        self.embedder, self.seen = embedder, {}

    def encode(self, texts, instruction=None, **kwargs):
        new = [t for t in dict.fromkeys(texts) if (t, instruction) not in self.seen]
        if new:
            self.seen.update({(t, instruction): v for t, v in zip(new, self.embedder.encode(new, instruction=instruction))})
        return torch.stack([self.seen[(t, instruction)] for t in texts])  # (N, D)


@pytest.fixture(scope="module")
def embedder(fixtures_dir):
    tiny = str(fixtures_dir / "tiny")
    torch.manual_seed(0)
    pooler = build_pooler(PoolerConfig(kind="mltp", hidden_size=64, num_layers=6, layers="last4", layer_token="eos", num_latents=4))
    return Remembering(Embedder(load_model(tiny), load_tokenizer(tiny), pooler, EmbedderConfig(model=tiny, max_length=128)))


def local_sts(data_dir):
    data = build_task("STSBenchmark", data_dir, "quick")
    task = mteb.get_task("STSBenchmark")
    task.dataset = {"default": DatasetDict({"test": Dataset.from_dict(
        {"sentence1": data.s1, "sentence2": data.s2, "score": [float(g) for g in data.gold]})})}
    task.data_loaded = True  # mteb's load_data would reach the hub
    return task


def test_mteb_sts_score_equals_ours(embedder, data_dir):
    theirs = local_sts(data_dir).evaluate(MTEBModel(embedder), split="test", encode_kwargs={"batch_size": 32})
    ours = evaluators.evaluate(embedder, tasks=["STSBenchmark"], data_dir=data_dir, suite="quick", log=lambda _: None)
    assert theirs["default"]["main_score"] == pytest.approx(ours["STSBenchmark"]["main_score"], abs=TOLERANCE)
    assert abs(ours["STSBenchmark"]["main_score"]) > 1e-3  # a real score, not an empty evaluation


class _Meta:
    def __init__(self, name, prompt=None):
        self.name, self.prompt = name, prompt


def test_instructions_follow_eval_tasks():
    model = MTEBModel(encoder=object.__new__(type("E", (), {"encode": None})))
    assert model.instruction(_Meta("STSBenchmark"), None) == TASKS["STSBenchmark"].instruction
    assert model.instruction(_Meta("SciFact"), mteb.types.PromptType.query) == TASKS["SciFact"].instruction
    assert model.instruction(_Meta("SciFact"), mteb.types.PromptType.document) is None
    assert model.instruction(_Meta("Banking77Classification"), None) == TASKS["Banking77"].instruction
    assert model.instruction(_Meta("Unknown", {"query": "Find it"}), mteb.types.PromptType.query) == "Find it"
    assert model.instruction(_Meta("Unknown"), None) is None
    assert isinstance(model, mteb.models.EncoderProtocol)
