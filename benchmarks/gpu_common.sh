# Shared by the GPU check scripts (sourced, not run): the environment, the time box and the stage runner.
#
# OUT: the folder the results go to (default: a fresh temporary one). DATA: folder with the Fashion-MNIST IDX files
# (default /usr/share/datasets/fashion-mnist). PY: the Python to run. DEVICE: cuda (default) or cpu for a smoke test.
# BUDGET: seconds for the whole check; `left` says how many remain. WORK: the folder for everything not brought back.
# With DEVICE=cuda it stops unless torch sees a CUDA device, records the device and runs the CUDA tests (90 s).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-$(mktemp -d)}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-480}
WORK=${WORK:-$(mktemp -d)}
LOGS=$WORK/logs
mkdir -p "$OUT" "$LOGS"
start=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - start) )); }
: > "$LOGS/stages.tsv"

stage() {  # stage NAME SECONDS COMMAND...: run it time-boxed, log to $LOGS/NAME.log, record exit status and time
    local name=$1 limit=$2 t0 rc
    shift 2
    t0=$(date +%s)
    timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1
    rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$LOGS/stages.tsv"
    return $rc
}

cuda_tests() {  # the device, and the CUDA tests in the background (the caller waits)
    [[ $DEVICE == cuda ]] || return 0
    $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
        echo "gpu check: no CUDA device visible to torch"; exit 1; }
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$LOGS/device.txt" 2>&1
    stage tests 90 $PY -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider &
}
