"""info_nce vs the plain logsumexp loop of scripts/fixtures/make_pooling_fixtures.py."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from closeness import FLOAT32_EPS
from mltp.loss import info_nce


@pytest.fixture(scope="module")
def case(fixtures_dir):
    raw = np.load(fixtures_dir / "pooling" / "loss_cases.npz")
    return {k: torch.from_numpy(raw[k]) for k in raw.files}


def close(got, expected, scale=20.0):
    # The loss rounds as its logits do, not as itself: cosines times `scale` (the cases' 20), each
    # a float32 dot product, then a logsumexp; 16 ulps of the largest logit is that rounding, and
    # a wrong mask or pairing moves the loss by tenths.
    assert got.dim() == 0 and got.dtype == torch.float32
    assert abs(got.item() - expected.item()) <= 16 * FLOAT32_EPS * scale, (got.item(), expected.item())


def test_against_reference(case):
    q, p, n, s = case["q"], case["p"], case["n"], float(case["scale"])
    close(info_nce(q, p, scale=s), case["loss_no_negatives"])
    close(info_nce(q, p, n[:, 0], scale=s), case["loss_one_negative"])  # n as (B, D)
    close(info_nce(q, p, n[:, :1], scale=s), case["loss_one_negative"])  # the same as (B, 1, D)
    close(info_nce(q, p, n, scale=s), case["loss_k_negatives"])


def test_flat_pool_of_negatives(case):
    # Only some rows have a hard negative: (N, D) with N != B, every one a candidate for every query.
    q, p, n, s = case["q"], case["p"], case["n"], float(case["scale"])
    pool = torch.stack([n[0, 0], n[2, 1], n[3, 0]])  # (3, D)
    close(info_nce(q, p, pool, scale=s), case["loss_flat_pool"])
    cand_keys = torch.cat([case["pos_keys"], case["cand_keys"][4:][[0, 5, 6]]])
    close(info_nce(q, p, pool, scale=s, pos_keys=case["pos_keys"], cand_keys=cand_keys), case["loss_flat_pool_masked"])


def test_false_negative_masking(case):
    q, p, n, s = case["q"], case["p"], case["n"], float(case["scale"])
    pos_keys, cand_keys = case["pos_keys"], case["cand_keys"]
    masked = info_nce(q, p, n, scale=s, pos_keys=pos_keys, cand_keys=cand_keys)
    close(masked, case["loss_k_negatives_masked"])
    close(info_nce(q, p, scale=s, pos_keys=pos_keys), case["loss_no_negatives_masked"])  # cand_keys = pos_keys
    # The fixture has false negatives (p[2] == p[0], two negatives equal to other positives):
    # masking them must lower the loss, and unique keys must change nothing.
    assert masked < info_nce(q, p, n, scale=s)
    unique = torch.arange(len(cand_keys))
    torch.testing.assert_close(info_nce(q, p, n, scale=s, pos_keys=unique[:4], cand_keys=unique),
                               info_nce(q, p, n, scale=s))


def test_masking_equals_dropping_the_candidate(case):
    # One query whose only false negative is removed: its term must equal the loss over the
    # remaining candidates, computed here by a different route (log-softmax over a subset).
    q, p, n, s = case["q"], case["p"], case["n"], float(case["scale"])
    keys = torch.tensor([1, 2, 3, 4])
    cand = torch.cat([keys, torch.tensor([5, 6, 7, 8, 9, 10, 1, 11])])  # q3's 1st negative = p0's text
    got = info_nce(q, p, n, scale=s, pos_keys=keys, cand_keys=cand)
    candidates = torch.cat([p, n.reshape(-1, p.shape[1])])
    logits = s * q @ candidates.T
    keep = torch.ones_like(logits, dtype=torch.bool)
    keep[0, 4 + 3 * 2 + 0] = False
    terms = [-(logits[i][keep[i]].log_softmax(0)[i]) for i in range(4)]
    close(got, torch.stack(terms).mean(), s)


def test_gradients_and_fp32(case):
    q = case["q"].to(torch.bfloat16).requires_grad_(True)
    p = case["p"].to(torch.bfloat16).requires_grad_(True)
    n = case["n"].to(torch.bfloat16).requires_grad_(True)
    loss = info_nce(q, p, n)
    assert loss.dtype == torch.float32
    loss.backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (q, p, n))


def test_scale_is_the_inverse_temperature():
    torch.manual_seed(0)
    q, p = F.normalize(torch.randn(5, 8), dim=-1), F.normalize(torch.randn(5, 8), dim=-1)
    logits = 7.0 * q @ p.T
    torch.testing.assert_close(info_nce(q, p, scale=7.0), F.cross_entropy(logits, torch.arange(5)))


def test_errors(case):
    q, p, n = case["q"], case["p"], case["n"]
    with pytest.raises(ValueError, match="q and p"):
        info_nce(q, p[:3])
    with pytest.raises(ValueError, match="n must be"):
        info_nce(q, p, n[:3])
    with pytest.raises(ValueError, match="cand_keys must key all C=12"):
        info_nce(q, p, n, pos_keys=case["pos_keys"])
    with pytest.raises(ValueError, match="cand_keys must be C=12"):
        info_nce(q, p, n, pos_keys=case["pos_keys"], cand_keys=case["cand_keys"][:5])
    with pytest.raises(ValueError, match="pos_keys must be B=4"):
        info_nce(q, p, pos_keys=case["pos_keys"][:2])
    with pytest.raises(ValueError, match="must equal pos_keys"):
        info_nce(q, p, n, pos_keys=case["pos_keys"], cand_keys=case["cand_keys"].roll(1))
    with pytest.raises(ValueError, match="without pos_keys"):
        info_nce(q, p, cand_keys=case["pos_keys"])
