"""The study: its configurations and the comparisons its report makes. The sweep that runs them:
mltp/cli/ablation.py; `run.py intervene`'s variants join the report by eval/interventions.py."""
from __future__ import annotations


# name -> overrides of the main job's flags. Ablations are run on the causal MLTP (M3), the
# paper's own reference point for MLTP; `--attn bidirectional` moves them to M5's setting.
def study_configs(attn: str) -> dict[str, dict]:
    # The W dose: an init std near the RMS of the per-block vectors W is added to (the middle
    # blocks of the default model), and a learning rate that moves it by a sizeable share of that
    # within a short run; each run records how far it moved (results.json: train.layer_table).
    dose = dict(layer_weight_std=8.0, layer_weight_lr_mult=300.0)
    middle = "middle1"  # the single-block controls read the middle block (15 of 30)
    return {
        "M1-eos": dict(pool="eos", attn="causal"),
        "M2-trainable": dict(pool="trainable", attn="causal"),
        "M3-mltp": dict(pool="mltp", attn="causal", layers="all"),
        "M4-trainable-bi": dict(pool="trainable", attn="bidirectional"),
        "M5-mltp-bi": dict(pool="mltp", attn="bidirectional", layers="all"),
        "A1-mltp-noW": dict(pool="mltp", attn=attn, layers="all", no_layer_weights=True),
        "A1-mltp-Wdose": dict(pool="mltp", attn=attn, layers="all", **dose),
        "A1-layer-mean": dict(pool="layer-mean", attn=attn, layers="all"),
        "A1-layer-mean-norm": dict(pool="layer-mean-norm", attn=attn, layers="all"),
        "A1-scalar-mix": dict(pool="scalar-mix", attn=attn, layers="all", layer_weight_lr_mult=dose["layer_weight_lr_mult"]),
        "A2-mltp-last4": dict(pool="mltp", attn=attn, layers="last4"),
        "A2-mltp-middle4": dict(pool="mltp", attn=attn, layers="middle4"),
        "A2-mltp-last4-noW": dict(pool="mltp", attn=attn, layers="last4", no_layer_weights=True),
        "A2-mltp-middle4-noW": dict(pool="mltp", attn=attn, layers="middle4", no_layer_weights=True),
        "A2-mltp-middle4-Wdose": dict(pool="mltp", attn=attn, layers="middle4", **dose),
        "A2-layer-mean-norm-middle4": dict(pool="layer-mean-norm", attn=attn, layers="middle4"),
        # M5 differs from M3 twice: bidirectional attention AND each block's masked mean instead of
        # its EOS token (the paper pairs them). This one, causal with the mean, tells the two apart.
        "A3-mltp-mean": dict(pool="mltp", attn="causal", layers="all", layer_token="mean"),
        # One middle block: does "middle 4 beat last 4" need 4 blocks and a head, or one block?
        "A4-mltp-middle1": dict(pool="mltp", attn=attn, layers=middle),
        "A4-trainable-middle1": dict(pool="trainable", attn=attn, block=15),
        "A4-eos-middle1": dict(pool="eos", attn=attn, block=15),
    }


def study_comparisons(reference: str) -> list[tuple[str, str, str]]:
    return [
        ("paper: MLTP vs EOS-last (causal)", "M3-mltp", "M1-eos"),
        ("paper: MLTP vs trainable, causal", "M3-mltp", "M2-trainable"),
        ("paper: MLTP vs trainable, bidirectional", "M5-mltp-bi", "M4-trainable-bi"),
        ("paper: MLTP bidirectional vs EOS-last", "M5-mltp-bi", "M1-eos"),
        ("paper: bidirectional vs causal MLTP", "M5-mltp-bi", "M3-mltp"),
        ("layer weights: on vs off, all blocks", reference, "A1-mltp-noW"),
        ("layer weights: dose vs off, all blocks", "A1-mltp-Wdose", "A1-mltp-noW"),
        ("layer weights: on vs off, middle 4", "A2-mltp-middle4", "A2-mltp-middle4-noW"),
        ("layer weights: dose vs off, middle 4", "A2-mltp-middle4-Wdose", "A2-mltp-middle4-noW"),
        ("layer weights: on vs off, last 4", "A2-mltp-last4", "A2-mltp-last4-noW"),
        ("blocks: all vs last 4", reference, "A2-mltp-last4"),
        ("blocks: all vs middle 4", reference, "A2-mltp-middle4"),
        ("blocks: middle 4 vs last 4", "A2-mltp-middle4", "A2-mltp-last4"),
        ("blocks: middle 4 vs the middle block (MLTP)", "A2-mltp-middle4", "A4-mltp-middle1"),
        ("middle block: MLTP vs EOS", "A4-mltp-middle1", "A4-eos-middle1"),
        ("MLTP over the middle 4 vs the middle block's EOS token", "A2-mltp-middle4", "A4-eos-middle1"),
        ("middle block: trainable vs EOS", "A4-trainable-middle1", "A4-eos-middle1"),
        ("middle block: EOS vs EOS-last", "A4-eos-middle1", "M1-eos"),
        ("head: MLTP vs normalised layer mean, all blocks", reference, "A1-layer-mean-norm"),
        ("head: MLTP vs normalised layer mean, middle 4", "A2-mltp-middle4", "A2-layer-mean-norm-middle4"),
        ("head: MLTP vs scalar mix, all blocks", reference, "A1-scalar-mix"),
        ("head: scalar mix vs normalised layer mean, all blocks", "A1-scalar-mix", "A1-layer-mean-norm"),
        ("head: MLTP vs plain (un-normalised) layer mean, all blocks", reference, "A1-layer-mean"),
        ("M5 apart, per-block token: mean vs EOS (causal)", "A3-mltp-mean", "M3-mltp"),
        ("M5 apart, attention: bidirectional vs causal (mean)", "M5-mltp-bi", "A3-mltp-mean"),
    ]
