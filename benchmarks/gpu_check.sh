#!/usr/bin/env bash
# convbench's GPU device check: every CUDA path (torch cuDNN candidates, CUDA-event timing,
# TensorFlow GPU where installed, Triton compiled kernels) run once on a GPU, in one command.
#
# Run it from anywhere; it works in the repository it lives in, installed or not:
#
#     bash benchmarks/gpu_check.sh results/gpu-$(date +%Y%m%d)
#
# On the device machine only 8 files come back from $OUT (2 folders down), so pack them:
#
#     bash benchmarks/gpu_check.sh /tmp/gpu-check; tar -C /tmp -czf $OUT/gpu-check.tar.gz gpu-check
#
# It installs nothing: it uses the python3 that holds PyTorch, puts a shim on PYTHONPATH when
# convbench is not installed from this checkout (entry points included), and installs the
# wheels found in .whl/ (if any) into a temporary --target folder. Each step runs under
# `timeout` with a share of the time left (a step that ends early leaves its time to the
# later ones); a step that fails or times out does not stop the next one; a sweep stopped
# at its time keeps the records it wrote (continue it with `convbench sweep --resume RUN`).
#
# Steps: nvidia-smi; wheels (if any); shim; deps; `convbench backends`; `convbench check
# --device cuda B` for every backend B that declares the cuda device (tensorflow, torch,
# triton; a backend that is not installed says so); the suite of ResNet-50's 3x3 layers; a sweep
# of those layers at n=32 in float16 and a sweep of `quick` in float32 (both channels_last,
# the triton backend's layout; float32 runs TF32 off and on as separate candidates:
# torch cudnn vs cudnn-tf32, triton igemm-* vs igemm-*-tf32); the Triton-vs-cuDNN table
# (GFLOP/s per layer and the ratio); `convbench report --html` of both sweeps.
#
# Produces in OUT: steps.tsv (step, status, exit, wall_s, timeout_s, command), summary.txt
# (also printed), logs/STEP.log, deps.txt, resnet50-3x3.toml, runs/RUN_ID/ (meta.json,
# records.jsonl), triton_vs_cudnn.txt and .csv, report.html, tuned-cache.sqlite.
#
# Expected wall time on an H100/H200: 4 to 6 minutes, never more than the limit (450 s) plus a
# few seconds. This is an estimate from the candidate counts (56 in the float16 sweep, 50 in
# the float32 one, each verified, compiled where it is Triton, and timed for <= 0.2 s), NOT a
# measurement: the script has not run on a GPU yet.
#
# Environment (defaults in brackets):
#   CONVBENCH_GPU_CHECK_LIMIT_S   overall time limit in seconds [450]
#   CONVBENCH_GPU_CHECK_DEVICE    cuda, or cpu for a stand-in run of every step [cuda]
#   CONVBENCH_GPU_CHECK_BACKENDS  backends to check and sweep [every backend declaring cuda]
#   CONVBENCH_GPU_CHECK_N         batch size of the ResNet-50 sweep [32]
#   CONVBENCH_GPU_CHECK_BUDGET    timing budget per candidate in seconds [0.2]
#   CONVBENCH_GPU_CHECK_PYTHON    the interpreter [python3, else python]
# Exit status: 0 when every step ended ok, 1 otherwise, 2 on a usage error.

set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PREP="$HERE/gpu_check_prep.py"
MIN_STEP_MS=3000          # a step with less time left than this is skipped
CHECK_WEIGHT=36           # all `convbench check` steps together
FALLBACK_BACKENDS="tensorflow torch triton"   # when the cuda-backends step cannot say

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
elapsed_s() { echo $(( ($(now_ms) - START_MS) / 1000 )); }
secs() { printf '%d.%03d' $(( $1 / 1000 )) $(( $1 % 1000 )); }   # milliseconds -> "s.mmm"

# init OUT: configuration, output folder, the clock; PENDING is the weight of all steps to come
init() {
    OUT=$1
    LIMIT_S=${CONVBENCH_GPU_CHECK_LIMIT_S:-450}
    DEVICE=${CONVBENCH_GPU_CHECK_DEVICE:-cuda}
    N=${CONVBENCH_GPU_CHECK_N:-32}
    BUDGET=${CONVBENCH_GPU_CHECK_BUDGET:-0.2}
    BACKENDS=${CONVBENCH_GPU_CHECK_BACKENDS:-}
    PY=${CONVBENCH_GPU_CHECK_PYTHON:-$(command -v python3 || command -v python || echo python3)}
    START_MS=$(now_ms)
    DEADLINE_MS=$(( START_MS + LIMIT_S * 1000 ))
    PENDING=${PENDING:-100}
    INTERRUPTED=0
    FAILED=0
    mkdir -p "$OUT/logs" "$OUT/runs" || return 2
    OUT=$(cd "$OUT" && pwd)
    printf 'step\tstatus\texit\twall_s\ttimeout_s\tcommand\n' >"$OUT/steps.tsv"
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/convbench-gpu-check.XXXXXX")
    CB=("$PY" -m convbench)
    trap 'rm -rf "$WORK"' EXIT
    export PYTHONUNBUFFERED=1 MPLBACKEND=Agg CONVBENCH_CACHE="$OUT/tuned-cache.sqlite"
}

record() {  # record NAME STATUS EXIT WALL_MS TIMEOUT_MS COMMAND...
    local name=$1 status=$2 rc=$3 wall=$4 limit=$5
    shift 5
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$(secs "$wall")" "$(secs "$limit")" \
        "$*" >>"$OUT/steps.tsv"
    [[ $status == ok ]] || FAILED=$(( FAILED + 1 ))
    printf '[%4ss] %-28s %-8s exit %-4s %7ss\n' "$(elapsed_s)" "$name" "$status" "$rc" "$(secs "$wall")"
}

# run_step NAME WEIGHT CMD...: CMD (output in logs/NAME.log) under `timeout`, given WEIGHT/PENDING
# of the time left: SIGINT at its time (a sweep then stops as Ctrl-C stops it, keeping its
# records), SIGKILL a grace later, so the step ends within its share. A SIGINT or SIGTERM to
# this script is passed on to the step, and the steps after it are skipped.
run_step() {
    local name=$1 weight=$2
    shift 2
    local log="$OUT/logs/$name.log" left=$(( DEADLINE_MS - $(now_ms) ))
    local share=$(( left > 0 ? left * weight / (PENDING > weight ? PENDING : weight) : 0 ))
    PENDING=$(( PENDING > weight ? PENDING - weight : 0 ))
    if (( INTERRUPTED )); then
        echo "skipped: the check was interrupted" >"$log"
        record "$name" skipped - 0 0 "$@"
        return 1
    fi
    if (( share < MIN_STEP_MS )); then
        echo "skipped: $(secs "$share") s of the time limit left for this step" >"$log"
        record "$name" skipped - 0 "$share" "$@"
        return 1
    fi
    local grace=$(( share >= 20000 ? 5000 : 1000 )) t0 rc status pid
    t0=$(now_ms)
    timeout -s INT -k "$(secs "$grace")" "$(secs $(( share - grace )))" "$@" >"$log" 2>&1 </dev/null &
    pid=$!
    wait "$pid"
    rc=$?
    while (( INTERRUPTED )) && kill -0 "$pid" 2>/dev/null; do  # `wait` returned for our trap
        kill -INT "$pid" 2>/dev/null
        wait "$pid"
        rc=$?
    done
    case $rc in
        0) status=ok ;;
        124 | 137) status=timeout ;;
        *) status=failed ;;
    esac
    (( INTERRUPTED )) && status=interrupted
    record "$name" "$status" "$rc" $(( $(now_ms) - t0 )) "$share" "$@"
    return $(( rc != 0 ))
}

unplanned() { PENDING=$(( PENDING > $1 ? PENDING - $1 : 0 )); }  # a planned step that will not run

setup_python() {  # wheels from .whl/, the shim, the dependency report
    if ! command -v "$PY" >/dev/null; then
        echo "no python interpreter ($PY): nothing can run" >"$OUT/logs/python.log"
        record python failed 127 0 0 "$PY"
        return 1
    fi
    if compgen -G "$REPO/.whl/*.whl" >/dev/null; then
        run_step wheels 2 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --upgrade --target "$WORK/site" "$REPO"/.whl/*.whl &&
            export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
    else
        unplanned 2
    fi
    run_step shim 2 "$PY" "$PREP" shim "$WORK/shim"
    if compgen -G "$WORK/shim/convbench-*.dist-info" >/dev/null; then
        export PYTHONPATH="$WORK/shim${PYTHONPATH:+:$PYTHONPATH}"
    fi
    run_step deps 2 "$PY" "$PREP" deps
    cp "$OUT/logs/deps.log" "$OUT/deps.txt" 2>/dev/null
    return 0
}

run_checks() {  # `convbench check` for each backend, CHECK_WEIGHT shared among them
    local names=$BACKENDS b k
    if [[ -z $names ]]; then
        run_step cuda-backends 3 "$PY" "$PREP" cuda-backends &&
            names=$(tail -n 1 "$OUT/logs/cuda-backends.log")
        if [[ ! $names =~ ^[a-z0-9_\ -]+$ ]]; then
            names=$FALLBACK_BACKENDS
            echo "using the fallback list: $names" >>"$OUT/logs/cuda-backends.log"
        fi
    else
        unplanned 3
    fi
    SWEEP_BACKENDS=$names
    k=$(wc -w <<<"$names")
    unplanned $(( CHECK_WEIGHT % k ))
    for b in $names; do
        run_step "check-$b" $(( CHECK_WEIGHT / k )) "${CB[@]}" check --device "$DEVICE" "$b"
    done
}

run_sweeps() {
    # shellcheck disable=SC2206  # SWEEP_BACKENDS is a list of words
    local common=(--device "$DEVICE" --layout channels_last --budget "$BUDGET" --timeout 60
                  --out "$OUT/runs" --cache "$CONVBENCH_CACHE" -b $SWEEP_BACKENDS)
    run_step suite-3x3 1 "$PY" "$PREP" suite "$OUT/resnet50-3x3.toml"
    run_step sweep-resnet50-3x3-fp16 30 "${CB[@]}" sweep "$OUT/resnet50-3x3.toml" --dtype float16 \
        -n "$N" "${common[@]}"
    run_step sweep-quick-fp32 15 "${CB[@]}" sweep quick --dtype float32 "${common[@]}"
}

run_tables() {
    run_step triton-vs-cudnn 3 "$PY" "$HERE/triton_vs_cudnn.py" "$OUT/runs" \
        --csv "$OUT/triton_vs_cudnn.csv"
    cp "$OUT/logs/triton-vs-cudnn.log" "$OUT/triton_vs_cudnn.txt" 2>/dev/null
    run_step report 5 "${CB[@]}" report "$OUT/runs" --html "$OUT/report.html" --metric gflops --plain
}

summary() {  # summary.txt: the steps, what could not be done (with its log's tail), the table
    {
        echo "convbench gpu_check: device $DEVICE, $(elapsed_s) s of a ${LIMIT_S} s limit, output in $OUT"
        column -t -s $'\t' "$OUT/steps.tsv" 2>/dev/null | cut -c1-110 || cut -f1-5 "$OUT/steps.tsv"
        echo
        if (( FAILED )); then
            echo "COULD NOT DO ($FAILED steps):"
            awk -F'\t' 'NR > 1 && $2 != "ok" {print $1 "\t" $2 "\t" $3}' "$OUT/steps.tsv" |
                while IFS=$'\t' read -r name status rc; do
                    echo "- $name: $status (exit $rc); last lines of logs/$name.log:"
                    tail -n 4 "$OUT/logs/$name.log" 2>/dev/null | cut -c1-200 | sed 's/^/    /'
                done
        else
            echo "every step ended ok"
        fi
        echo
        echo "Triton vs cuDNN:"
        sed 's/^/  /' "$OUT/logs/triton-vs-cudnn.log" 2>/dev/null || echo "  (not run)"
    } >"$OUT/summary.txt"
    cat "$OUT/summary.txt"
}

main() {
    if [[ $# -ne 1 || $1 == -* ]]; then
        echo "usage: bash benchmarks/gpu_check.sh OUTPUT_DIR   (see the header of this script)" >&2
        return 2
    fi
    PENDING=$(( 1 + 6 + 8 + 3 + CHECK_WEIGHT + 1 + 30 + 15 + 3 + 5 ))
    init "$1" || return 2
    trap 'INTERRUPTED=1' INT TERM
    cd "$REPO" || return 2
    echo "convbench gpu_check: device $DEVICE, limit ${LIMIT_S} s, output in $OUT"
    if [[ $DEVICE == cuda ]]; then
        unset TRITON_INTERPRET   # compiled kernels, not the interpreter
        run_step nvidia-smi 1 nvidia-smi
    else
        unplanned 1
    fi
    setup_python || { summary; return 1; }
    run_step backends 8 "${CB[@]}" backends $BACKENDS
    run_checks
    run_sweeps
    run_tables
    summary
    return $(( FAILED > 0 ))
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
    exit $?
fi
