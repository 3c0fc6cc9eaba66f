#!/usr/bin/env bash
# One GPU session over three consecutive device calls: `bash scripts/gpu_session.sh a|b|c`.
#
#   a: stash the GGUF's first part; benchmark vs transformers (SDPA_CHECK=on adds bench/sdpa_gqa.py)
#   b: stash the rest; join, verify the sha256, convert the GGUF to a checkpoint directory
#   c: stash the last data; the ablation study, time-limited, resumable (MERGE_CHECK=on: adapter merge timing first)
#
# Parts come from scripts/gpu_pack.sh (.gpu/a, .gpu/b, .gpu/c; each call carries its own) and are
# joined in /tmp/stage, which a warm machine keeps between calls. Every step has its own timeout
# that ends inside the call's limit, and whatever it wrote is packed into $OUT, so a failed or cut
# step still returns its log. Environment: STUDY_MINUTES (c: the sweep's --time-limit, default 6),
# STUDY_ARGS (c: training budget flags), BENCH_COMPILE_MODE (a: default reduce-overhead; "none"
# skips the compiled benchmark), BENCH_SECONDS (a: the eager benchmark's cap, default 200), BENCH_SHAPES
# (a: default the three; e.g. smollm2-135m,qwen2-0.5b leaves out the slow 7B shape),
# BENCH_SKIP_PADDING (a: "off" skips the encode benchmark with mltp skipping padding; SKIP_SECONDS, default 90),
# PROBE_SECONDS (c: time for `run.py probe --pooler` on the new MLTP runs, default 90), MERGE_CHECK (c: off).
# DEVICE (default cuda): "cpu" rehearses the plumbing on a machine without a GPU (the file names
# say "cpu"); see "Rehearsal" in results/README.md.
# MLTP_GIT_REVISION defaults to the revision gpu_pack.sh recorded (the machine's copy may carry a
# stale .git; run.py records this variable instead).
#
# The study goes on across sessions: stage c starts from the runs committed in results/gpu-study
# (finished configurations are skipped) and returns the whole directory in $OUT/study.tar.gz;
# unpack it over results/gpu-study and commit (results/README.md); a call cut short returns
# $OUT/study-snapshot.tar.gz instead (at most 30 s old). The GPU trains with one joint forward
# per step; the first session's three runs, made with separate forwards, are results/h100-pilot
# and are not mixed in (mltp/cli/study.py BUDGET_KEYS).
set -u
stage=${1:?usage: gpu_session.sh a|b|c}
cd "$(dirname "$0")/.."
S=${STAGE_DIR:-/tmp/stage}
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$S" "$OUT"
export PYTHONUNBUFFERED=1 MLTP_CACHE=$S/cache
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
if [ -z "${MLTP_GIT_REVISION:-}" ] && [ -f ".gpu/$stage/REVISION" ]; then
    export MLTP_GIT_REVISION=$(cat ".gpu/$stage/REVISION")
fi
log() { echo "[$(date -u +%H:%M:%S)] $*"; }
# Result files are named after the card: "NVIDIA H100 80GB HBM3" -> h100, "NVIDIA H200" -> h200.
card() {
    if [ "$DEVICE" = cpu ]; then echo cpu; return; fi
    nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | awk '{print tolower($2)}'
}

case $stage in
a)
    cp .gpu/a/gguf.part1 "$S/"
    [ "$DEVICE" = cpu ] || nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
    gpu=$(card)
    $PY -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
    mkdir -p "$S/bench"
    if [ "${SDPA_CHECK:-off}" != off ]; then  # measured on the H100 (bench/results/sdpa-gqa-h100.md)
        log "sdpa check"
        timeout 40 $PY bench/sdpa_gqa.py --out "$S/bench/sdpa-gqa-$gpu" 2>&1 | tee "$S/bench/sdpa.log"
    fi
    log "benchmark, eager"
    timeout "${BENCH_SECONDS:-200}" $PY bench/bench.py --device "$DEVICE" --modes encode,train,train-joint --steps 10 --warmup 3 ${BENCH_SHAPES:+--shapes "$BENCH_SHAPES"} \
        --out "$S/bench/$gpu" 2>&1 | tee "$S/bench/eager.log"
    if [ "${BENCH_SKIP_PADDING:-on}" != off ]; then
        # Off by default on a GPU (mltp.packed.packs_padding) until this measures it:
        # encode at all three shapes with mltp computing only the real tokens.
        log "benchmark, encode, mltp skipping padding"
        timeout "${SKIP_SECONDS:-90}" $PY bench/bench.py --device "$DEVICE" --modes encode --skip-padding on --steps 10 --warmup 3 ${BENCH_SHAPES:+--shapes "$BENCH_SHAPES"} \
            --out "$S/bench/$gpu-skip-padding" 2>&1 | tee "$S/bench/skip-padding.log"
    fi
    if [ "${BENCH_COMPILE_MODE:-reduce-overhead}" != none ]; then
        log "benchmark, torch.compile ${BENCH_COMPILE_MODE:-reduce-overhead} (SmolLM2 shape, encode)"
        # Its own cap, since compiling 30 blocks outlasts the eager cap (bench/README.md, H100 results).
        timeout 120 $PY bench/bench.py --device "$DEVICE" --compile "${BENCH_COMPILE_MODE:-reduce-overhead}" --shapes smollm2-135m \
            --modes encode --steps 10 --warmup 3 --out "$S/bench/$gpu-compile" 2>&1 | tee "$S/bench/compile.log"
    fi
    tar czf "$OUT/bench.tar.gz" -C "$S" bench
    ;;
b)
    cp -r .gpu/b/* "$S/"
    cat "$S/gguf.part1" "$S/gguf.part2" > "$S/model.gguf" || exit 1
    echo "$(cat "$S/gguf.sha256")  $S/model.gguf" | sha256sum -c - || exit 1
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$S/site" "$S"/whl/*.whl || exit 1
    log "converting"
    # Where `--model smollm2-135m` looks first (mltp.formats.gguf.default_model_dir), so run.py finds it.
    PYTHONPATH=$S/site timeout 120 $PY -c "
import sys
from mltp.formats.gguf import cache_root, convert_gguf
print('converted to', convert_gguf(sys.argv[1], cache_root() / 'models' / 'smollm2-135m'))" "$S/model.gguf" || exit 1
    ls -la "$MLTP_CACHE/models/smollm2-135m"
    ;;
c)
    mkdir -p "$S/data" && cp -r .gpu/c/data/. "$S/data/"
    test -f "$MLTP_CACHE/models/smollm2-135m/config.json" || { echo "no converted model: run stage b first"; exit 1; }
    if [ "${MERGE_CHECK:-off}" != off ]; then
        # What evaluating with the adapter merged buys on this card (run.py does it; bench/lora_merge.py).
        # Opt-in: its 60 s are a fifth of what a 15-minute session leaves the study.
        timeout 60 $PY bench/lora_merge.py --device "$DEVICE" --texts 128 --reps 3 --out "$OUT/lora-merge-$(card)" 2>&1 | tail -12
    fi
    if [ -d results/gpu-study ]; then  # earlier sessions' runs: the sweep skips them
        mkdir -p "$S/study" && cp -rn results/gpu-study/. "$S/study/"
    fi
    minutes=${STUDY_MINUTES:-6}
    deadline=$(( $(date +%s) + minutes * 60 ))
    # Two passes, each seed-major. First the study's two questions at all three seeds (W on/off;
    # which blocks; the plain layer mean): the CPU study (results/cpu-study) found seed spread as
    # large as the differences asked about, so one seed of these answers nothing. Then the paper's
    # models and the rest, M5 and A3 first (the CPU study's largest differences from M3).
    core=M3-mltp,A1-mltp-noW,A2-mltp-middle4,A2-mltp-last4,A1-layer-mean
    rest=M5-mltp-bi,A3-mltp-mean,M1-eos,A2-mltp-middle4-noW,A2-mltp-last4-noW,M2-trainable,M4-trainable-bi
    log "study, $minutes min"
    # A snapshot into $OUT every 30 s: a call cut at its limit (the session's device time running
    # out) still returns every configuration finished by then, which the tar below alone would lose.
    ( while sleep 30; do
        tar czf "$OUT/study-snapshot.tmp" --exclude=checkpoints --exclude=final -C "$S" study 2>/dev/null \
            && mv "$OUT/study-snapshot.tmp" "$OUT/study-snapshot.tar.gz"
    done ) &
    snapshot=$!
    sweep() {  # sweep CONFIGS: the sweep until the deadline, resumable, appending to study.log
        local left=$(( deadline - $(date +%s) ))
        # The hard cap leaves a minute past the soft limit for the last run to finish its evaluation.
        timeout $(( left + 60 )) $PY run.py ablation --only "$1" --seeds 3 --suite quick --no-report \
            ${STUDY_ARGS:---steps 150 --batch-size 64 --max-length 128 --lr 2e-4} \
            --data-dir "$S/data" --out "$S/study" --time-limit "$(awk -v s="$left" 'BEGIN { printf "%.2f", s / 60 }')" 2>&1 \
            | tee -a "$OUT/study.log"
    }
    sweep "$core"
    finished=$(for c in ${core//,/ }; do ls "$S/study/$c"/seed-{0,1,2}/results.json; done 2>/dev/null | wc -l)
    # Only once the core is complete: a sweep starts its first new run whatever its limit (it has
    # no run time to judge by yet), so a second pass started on a core cut short by the limit
    # would start a run the hard cap then kills.
    if [ "$finished" -eq 15 ] && [ $(( deadline - $(date +%s) )) -gt 120 ]; then
        sweep "$rest"
    fi
    # No report here: a report over a dozen configurations is ~20 s of CPU (bootstrap and permutation
    # tests), device time better spent on runs; `run.py ablation --report-only` rebuilds it locally.
    # Where each trained MLTP pooler attends (run.py probe --pooler), while its weights are here:
    # final/ never leaves this machine. Runs that already have it are skipped.
    end=$(( $(date +%s) + ${PROBE_SECONDS:-90} ))
    for final in "$S"/study/*/seed-*/final; do
        grep -q '"kind": "mltp"' "$final/pooler_config.json" 2>/dev/null || continue
        [ -f "$(dirname "$final")/pooler-attention/pooler_attention.json" ] && continue
        left=$(( end - $(date +%s) )); [ "$left" -gt 10 ] || break
        log "pooler attention: $final"
        timeout "$left" $PY run.py probe --pooler "$final" --suite quick --data-dir "$S/data" 2>&1 | tail -5
    done
    kill "$snapshot" 2>/dev/null; wait "$snapshot" 2>/dev/null; rm -f "$OUT/study-snapshot.tmp"
    tar czf "$OUT/study.tar.gz" --exclude=checkpoints --exclude=final -C "$S" study && rm -f "$OUT/study-snapshot.tar.gz"
    ;;
*)
    echo "unknown stage $stage (a, b or c)"; exit 2 ;;
esac
log "stage $stage done"
