#!/usr/bin/env bash
# Distilled sets under IDC's evaluation, on one CUDA device: 5 fresh ConvNet-3 per set trained for 1000 epochs in
# minibatches of 64 with the run's own augmentation and CutMix on half of the minibatches (IDC's protocol, arXiv
# 2205.14959, whose Fashion-MNIST figures are measured so), beside the random-subset floor under the same protocol
# (DSA augmentation). One process per network (`evaluate --nets 1 --seed S`), all side by side: the step is bound by
# op dispatch, and one set's 5 networks take 35 000 steps. Also the CUDA tests. Prints one table (also
# $OUT/summary.md) and packs the logs into $OUT/results.tar.gz.
#
#     RUNS="DIR1 DIR2" bash benchmarks/gpu_idc_eval.sh   # from the repository root; DIR1's floor is measured
#     EXTRA="DIR3" ...                                    # evaluated too if EXTRA_S of the BUDGET seconds are left
#     DEVICE=cpu SMOKE=1 RUNS=DIR bash benchmarks/gpu_idc_eval.sh   # the plumbing only
source "$(dirname "$0")/gpu_common.sh"

NETS=5 EPOCHS=1000 BATCH=64 LIMIT=${LIMIT:-$(( BUDGET - 30 ))} EXTRA_S=${EXTRA_S:-240}
[[ -n ${SMOKE:-} ]] && NETS=2 EPOCHS=1
IDC=(--protocol standard --epochs "$EPOCHS" --batch-size "$BATCH" --cutmix 0.5 --device "$DEVICE" --json --nets 1)
cuda_tests

evaluate_set() {  # evaluate_set DIR SECONDS: its NETS networks under IDC's protocol, one process each, in the background
    local dir=$1 limit=$2 aug=none s
    [[ -f $dir/policy.json ]] && aug=run
    for (( s = 0; s < NETS; s++ )); do
        OMP_NUM_THREADS=1 stage "idc-$(basename "$dir")-$s" "$limit" $PY -m augdistill evaluate "$dir" "${IDC[@]}" \
            --aug "$aug" --seed "$s" &
    done
}
first=${RUNS%% *}
for (( s = 0; s < NETS; s++ )); do
    OMP_NUM_THREADS=1 stage "idc-floor-$s" "$LIMIT" $PY -m augdistill evaluate "$first" "${IDC[@]}" \
        --protocol random-subset --aug dsa --seed "$s" &
done
for dir in $RUNS; do evaluate_set "$dir" "$LIMIT"; done
wait
sets="floor $(for d in $RUNS; do basename "$d"; done)"
if [[ -n ${EXTRA:-} && $(left) -gt $EXTRA_S ]]; then
    for dir in $EXTRA; do evaluate_set "$dir" $(( $(left) - 20 )); done  # cut before BUDGET, so the table prints
    wait
    sets="$sets $(for d in $EXTRA; do basename "$d"; done)"
fi

SETS="$sets" NETS=$NETS LOGS="$LOGS" TOTAL_S=$(( $(date +%s) - start )) $PY - <<'PYEOF' | tee "$OUT/summary.md"
import os, statistics, sys
from pathlib import Path

sys.path.insert(0, "benchmarks")
from gpu_table import StageLog, device_rows, print_table

log = StageLog(Path(os.environ["LOGS"]))
rows = device_rows(log)
for name in os.environ["SETS"].split():
    stages = [f"idc-{name}-{s}" for s in range(int(os.environ["NETS"]))]
    records = [r for r in map(log.eval_result, stages) if r]
    accs = [100 * a for r in records for a in r["accs"]]
    times = ", ".join(log.state(s) for s in stages)
    result = f"{statistics.mean(accs):.2f} ± {statistics.stdev(accs) if len(accs) > 1 else 0:.2f}% ({len(accs)} nets)" \
        if accs else "no network finished"
    what = "random-subset floor (DSA)" if name == "floor" else name
    rows.append((f"IDC protocol, {what}", times, result))
rows.append(("total", "", f"{os.environ['TOTAL_S']} s"))
print_table(rows)
PYEOF
tar -czf "$OUT/results.tar.gz" -C "$WORK" logs
