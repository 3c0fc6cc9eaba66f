"""The per-block probe: one batched encode serves every block, and each block's vectors are the
ones the study's own single-block pooler gives through Embedder.encode."""
import pytest
import torch

import mltp
from mltp.cli.probe import BlockVectors, LayerCache
from mltp.embedder import Embedder, EmbedderConfig
from mltp.pooling import PoolerConfig, build_pooler

TEXTS = ["a short one", "a considerably longer text than the first one, with more words", "mid length text", "x"]


@pytest.fixture(scope="module")
def tiny(fixtures_dir):
    directory = fixtures_dir / "tiny"
    return mltp.load_model(directory), mltp.load_tokenizer(directory), EmbedderConfig(model=str(directory))


def test_each_block_view_is_that_blocks_single_layer_pooler(tiny):
    model, tokenizer, config = tiny
    L = model.config.num_hidden_layers
    probed = [2, L]
    cache = LayerCache(Embedder(model, tokenizer, BlockVectors(probed), config))
    for mode, token in enumerate(("eos", "mean")):
        for layer in probed:
            # layer-mean over one block: that block's EOS or mean vector, unit norm
            pooler = build_pooler(PoolerConfig(kind="layer-mean", hidden_size=model.config.hidden_size,
                                               num_layers=L, layers=str(layer), layer_token=token))
            expected = Embedder(model, tokenizer, pooler, config).encode(TEXTS, "an instruction", batch_size=3)
            got = cache.view(mode, layer).encode(TEXTS, "an instruction")
            # The cache holds fp16 (eps 2**-10 ~ 9.8e-4) of unit vectors: two fp16 ulps of their norm.
            torch.testing.assert_close(got, expected, atol=2e-3, rtol=0)


def test_a_text_set_is_encoded_once(tiny, monkeypatch):
    model, tokenizer, config = tiny
    embedder = Embedder(model, tokenizer, BlockVectors([1, 3]), config)
    calls = []
    real_encode = embedder.encode
    monkeypatch.setattr(embedder, "encode", lambda *a, **k: calls.append(a) or real_encode(*a, **k))
    cache = LayerCache(embedder)
    for mode in (0, 1):
        for layer in (1, 3):
            assert cache.view(mode, layer).encode(TEXTS).shape == (len(TEXTS), model.config.hidden_size)
    assert len(calls) == 1
