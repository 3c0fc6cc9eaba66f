"""Retrieval: exact cosine search over the corpus, scored like trec_eval (MTEB's retrieval evaluator).

MTEB (mteb/evaluation/evaluators/retrieval_evaluator.py) ranks the whole corpus by cosine for
every query, keeps the top 1000, and hands the run to pytrec_eval (trec_eval 9.x). So:

- Ranking: score DESCENDING, scores compared as float32; ties broken by doc id DESCENDING in
  byte order (trec_eval's `comp_sim_docno`: strcmp(docno2, docno1)). We pick the top-k with the
  same rule, so a tie at the cut keeps the doc that trec_eval would rank first.
- nDCG@k (trec_eval `ndcg_cut`): DCG = sum_{i<k} g_i / log2(i+2), gain = the raw grade, only
  grades > 0 count; IDCG from ALL judged docs with grade > 0 (sorted by grade, cut at k),
  retrieved or not; IDCG = 0 -> 0.
- MAP@k (`map_cut`) = sum over relevant hits at rank r <= k of (hits so far / r), divided by
  R = number of judged docs with grade >= 1. Recall@k = hits@k / R. P@k = hits@k / k.
- MRR@k (computed by MTEB itself) = 1 / rank of the first relevant doc within k, else 0.
- Queries without relevance judgements are dropped; the rest are averaged. Some tasks
  (ArguAna, Quora, ...) drop a hit whose doc id equals the query id (`ignore_identical_ids`).

Shapes: Q = queries, N = corpus docs, C = docs in one chunk, K = docs kept per query, D = width.
"""
import numpy as np
import torch

from .sts import to_numpy


def _unit_rows(x, name: str) -> torch.Tensor:
    t = torch.from_numpy(to_numpy(x))  # (rows, D) float64
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, D), got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")
    norms = t.norm(dim=1, keepdim=True)  # (rows, 1)
    if (norms == 0).any():
        raise ValueError(f"{name} has zero-norm row(s) {torch.nonzero(norms[:, 0] == 0)[:5, 0].tolist()}")
    return t / norms


def _trec_keys(scores: torch.Tensor, tie_rank: torch.Tensor) -> torch.Tensor:
    # One int64 per (query, doc) that orders exactly like trec_eval: (float32 score, doc id).
    # The float32 bit pattern, read as an int, is monotone in the value for positives and
    # reversed for negatives; flipping the 31 magnitude bits of negatives makes it monotone
    # everywhere. High 32 bits = score, low 32 bits = rank of the doc id in byte order.
    s32 = scores.to(torch.float32) + 0.0  # (Q, C); + 0.0 turns -0.0 into +0.0 (they tie)
    bits = s32.view(torch.int32).to(torch.int64)  # (Q, C)
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return bits * (1 << 32) + tie_rank  # (Q, C)


def top_k_trec_order(queries: torch.Tensor, docs: torch.Tensor, tie_rank: torch.Tensor, k: int,
                     chunk_size: int, excluded: torch.Tensor) -> list[np.ndarray]:
    # Exact top-k by chunks of the corpus: top-k of each chunk, merged with the running top-k.
    # `excluded[q]` is a doc index never to return for query q (or -1).
    drop = torch.iinfo(torch.int64).min  # below every finite score's key
    out = []
    for q0 in range(0, len(queries), chunk_size):
        qs = queries[q0:q0 + chunk_size]  # (Qc, D)
        ex = excluded[q0:q0 + chunk_size]  # (Qc,)
        best_keys = torch.empty(len(qs), 0, dtype=torch.int64)  # (Qc, <=K)
        best_idx = torch.empty(len(qs), 0, dtype=torch.int64)
        for d0 in range(0, len(docs), chunk_size):
            ds = docs[d0:d0 + chunk_size]  # (C, D)
            keys = _trec_keys(qs @ ds.T, tie_rank[d0:d0 + chunk_size])  # (Qc, C)
            hit = (ex >= d0) & (ex < d0 + len(ds))  # (Qc,) queries whose excluded doc is here
            keys[hit, ex[hit] - d0] = drop
            keys, idx = torch.topk(keys, min(k, len(ds)), dim=1)  # (Qc, <=K)
            keys = torch.cat([best_keys, keys], dim=1)
            idx = torch.cat([best_idx, idx + d0], dim=1)
            best_keys, pos = torch.topk(keys, min(k, keys.shape[1]), dim=1)  # sorted, best first
            best_idx = torch.gather(idx, 1, pos)  # (Qc, K)
        for keys_q, idx_q in zip(best_keys, best_idx):
            out.append(idx_q[keys_q != drop].numpy())  # an excluded doc can surface when K >= N
    return out


def query_metrics(gains: np.ndarray, judged_grades: list[int], k_values) -> dict:
    # gains: grade of each retrieved doc, best first (0 for unjudged). trec_eval semantics.
    relevant = gains > 0  # (K,)
    n_relevant = sum(1 for g in judged_grades if g > 0)  # R: judged relevant, retrieved or not
    ideal = np.sort(np.array([g for g in judged_grades if g > 0], dtype=np.float64))[::-1]
    discount = 1.0 / np.log2(np.arange(max(len(gains), len(ideal), max(k_values))) + 2.0)
    hits_so_far = np.cumsum(relevant)  # (K,)
    ranks = np.arange(1, len(gains) + 1)
    first_hit = int(np.argmax(relevant)) + 1 if relevant.any() else None
    m = {}
    for k in k_values:
        cut = gains[:k]
        dcg = float((np.where(cut > 0, cut, 0.0) * discount[:len(cut)]).sum())
        idcg = float((ideal[:k] * discount[:len(ideal[:k])]).sum())
        hits = int(relevant[:k].sum())
        precisions_at_hits = (hits_so_far[:k] / ranks[:k])[relevant[:k]]
        m[f"ndcg_at_{k}"] = dcg / idcg if idcg > 0 else 0.0
        m[f"map_at_{k}"] = float(precisions_at_hits.sum()) / n_relevant if n_relevant else 0.0
        m[f"recall_at_{k}"] = hits / n_relevant if n_relevant else 0.0
        m[f"precision_at_{k}"] = hits / k
        m[f"mrr_at_{k}"] = 1.0 / first_hit if first_hit is not None and first_hit <= k else 0.0
    return m


def score_retrieval(query_emb, doc_emb, query_ids: list[str], doc_ids: list[str],
                    qrels: dict[str, dict[str, int]], *, ignore_identical_ids: bool = False,
                    k_values=(1, 3, 5, 10, 100, 1000), chunk_size: int = 1024) -> dict:
    queries = _unit_rows(query_emb, "query_emb")  # (Q, D)
    docs = _unit_rows(doc_emb, "doc_emb")  # (N, D)
    if len(query_ids) != len(queries):
        raise ValueError(f"{len(query_ids)} query ids for {len(queries)} query embeddings")
    if len(doc_ids) != len(docs):
        raise ValueError(f"{len(doc_ids)} doc ids for {len(docs)} doc embeddings")
    if queries.shape[1] != docs.shape[1]:
        raise ValueError(f"query width {queries.shape[1]} != doc width {docs.shape[1]}")
    if len(set(doc_ids)) != len(doc_ids):
        raise ValueError("doc_ids contain duplicates")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    k_values = sorted({int(k) for k in k_values} | {10})  # ndcg@10 is the main score
    if k_values[0] < 1:
        raise ValueError(f"k_values must be positive, got {k_values}")

    kept = [i for i, qid in enumerate(query_ids) if qid in qrels and len(qrels[qid]) > 0]
    if not kept:
        raise ValueError("no query has relevance judgements in qrels")
    kept_ids = [query_ids[i] for i in kept]

    # tie_rank[j] = position of doc_ids[j] in byte order; a larger rank wins a tie
    by_bytes = sorted(range(len(doc_ids)), key=lambda j: doc_ids[j].encode("utf-8"))
    tie_rank = torch.empty(len(doc_ids), dtype=torch.int64)
    tie_rank[torch.tensor(by_bytes, dtype=torch.int64)] = torch.arange(len(doc_ids))
    doc_index = {d: j for j, d in enumerate(doc_ids)}
    excluded = torch.tensor([doc_index.get(q, -1) if ignore_identical_ids else -1 for q in kept_ids],
                            dtype=torch.int64)  # (Qk,)

    ranked = top_k_trec_order(queries[kept], docs, tie_rank, min(max(k_values), len(doc_ids)),
                              chunk_size, excluded)
    per_query = []
    for qid, docs_q in zip(kept_ids, ranked):
        judged = qrels[qid]
        gains = np.array([judged.get(doc_ids[j], 0) for j in docs_q], dtype=np.float64)  # (K,)
        per_query.append(query_metrics(gains, list(judged.values()), k_values))

    result = {name: float(np.mean([m[name] for m in per_query])) for name in per_query[0]}
    result["main_score"] = result["ndcg_at_10"]
    result["n_items"] = len(kept_ids)
    result["per_item"] = {"kind": "mean", "values": [m["ndcg_at_10"] for m in per_query], "ids": kept_ids}
    return result
