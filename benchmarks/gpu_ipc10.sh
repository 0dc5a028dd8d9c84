#!/usr/bin/env bash
# The ipc-10 recipe check on one CUDA device (about 8 minutes): which Fashion-MNIST 10-images-per-class recipe to
# run on 2 CPU cores for 90 minutes (the parameterisation issue's 86% check). Each run takes the iterations that
# recipe takes in 90 minutes on 2 idle CPU cores (measured there), so the GPU answers the CPU's question quickly;
# all run side by side (the step is bound by op dispatch, so the processes share the device well), then each set
# trains 5 fresh ConvNet-3 (300 epochs, the run's own augmentation). Also the CUDA tests. Prints one table (also
# $OUT/summary.md) and packs logs, metrics and sets into $OUT/results.tar.gz.
#
#     bash benchmarks/gpu_ipc10.sh                      # from the repository root, on a machine with a GPU
#     DATA=DIR PY=python3 BUDGET=480 bash benchmarks/gpu_ipc10.sh
#     DEVICE=cpu SMOKE=1 bash benchmarks/gpu_ipc10.sh   # the plumbing only
#
# The recipes, all IDC's multi-formation (f = 2, 400 decoded images from 10 stored per class):
#   dc-lrX       gradient matching with IDC's choices (network trained on the real batch, L1 over conv kernels),
#                fixed DSA, image lr X; 800 iterations (0.15 it/s on 2 CPU cores)
#   dc-learn     the same at lr 0.012 with the learned policy (Augerino critic, lambda 3); 500 iterations
#   dm-learn     DM with the learned policy, the README's 83.30 row; 1330 iterations (900 in its 60 minutes)
#   dc-learn-long  dc-learn for as long as the time box allows: the recipe's headroom on a GPU
source "$(dirname "$0")/gpu_common.sh"

RUN_S=240 MARGIN=100 EVAL_S=150 EVAL_NETS=5 EVAL_EPOCHS=300 VAL_NETS=2 VAL_EPOCHS=100 EVAL_EVERY=100 WIDTH=128
SCALE=1
if [[ -n ${SMOKE:-} ]]; then  # the plumbing only, on any device
    RUN_S=60 MARGIN=300 EVAL_S=300 EVAL_NETS=1 EVAL_EPOCHS=1 VAL_NETS=1 VAL_EPOCHS=2 EVAL_EVERY=2 WIDTH=8 SCALE=200
fi
cuda_tests

LEARN=(--policy learn --policy-init policies/dsa.json --siamese --policy-critic real --critic-per-class 16
       --width-weight 3)
FIXED=(--policy fixed --policy-init policies/dsa.json --siamese)
IDC=(--method dc --dc-train-on real --dc-distance l1 --outer-loop 50 --inner-loop 1 --net-lr 0.1)
distill() {  # distill NAME ITERATIONS FLAGS...: one ipc-10 multi-formation run into $WORK/NAME
    local name=$1 its=$(( ($2 + SCALE - 1) / SCALE ))
    shift 2
    OMP_NUM_THREADS=1 stage "$name" $(( RUN_S + MARGIN )) $PY -m augdistill distill --dataset fashion-mnist \
        --data-root "$DATA" --device "$DEVICE" --width "$WIDTH" --ipc 10 --param multi-formation --factor 2 \
        --iterations "$its" --time-budget "$RUN_S" --eval-every "$EVAL_EVERY" --eval-nets "$VAL_NETS" \
        --val-epochs "$VAL_EPOCHS" --final-nets 0 --out "$WORK/$name" "$@"
}
distill dc-lr0.004 800 "${IDC[@]}" "${FIXED[@]}" --lr-images 0.004 &
distill dc-lr0.012 800 "${IDC[@]}" "${FIXED[@]}" --lr-images 0.012 &
distill dc-lr0.036 800 "${IDC[@]}" "${FIXED[@]}" --lr-images 0.036 &
distill dc-learn 500 "${IDC[@]}" "${LEARN[@]}" --lr-images 0.012 &
distill dm-learn 1330 --method dm "${LEARN[@]}" &
distill dc-learn-long 100000 "${IDC[@]}" "${LEARN[@]}" --lr-images 0.012 &
wait

RUNS="dc-lr0.004 dc-lr0.012 dc-lr0.036 dc-learn dm-learn dc-learn-long"
for run in $RUNS; do  # the run's own augmentation: DSA's for the fixed rows, the learned policy for the others
    aug=run; [[ $run == dc-lr* ]] && aug=dsa
    [[ -f $WORK/$run/synthetic.pt ]] && OMP_NUM_THREADS=1 stage "eval-$run" "$EVAL_S" $PY -m augdistill evaluate \
        "$WORK/$run" --protocol standard --nets "$EVAL_NETS" --epochs "$EVAL_EPOCHS" --aug "$aug" \
        --device "$DEVICE" --json &
done
wait

RUNS="$RUNS" LOGS="$LOGS" WORK="$WORK" TOTAL_S=$(( $(date +%s) - start )) $PY - <<'PYEOF' | tee "$OUT/summary.md"
import os, sys
from pathlib import Path

sys.path.insert(0, "benchmarks")
from gpu_table import StageLog, device_rows, mean_std, print_table, run_summary

log, work = StageLog(Path(os.environ["LOGS"])), Path(os.environ["WORK"])
rows = device_rows(log)
for run in os.environ["RUNS"].split():
    summary, _ = run_summary(work / run)
    test = log.eval_result(f"eval-{run}")
    rows.append((f"ipc 10 multi-formation, {run}", log.state(run),
                 f"{summary}; test {mean_std(test) if test else log.state(f'eval-{run}')}"))
rows.append(("total", "", f"{os.environ['TOTAL_S']} s"))
print_table(rows)
PYEOF

tar -czf "$OUT/results.tar.gz" -C "$WORK" $(cd "$WORK" && ls -d logs {dc,dm}-*/config.json {dc,dm}-*/metrics.json \
    {dc,dm}-*/synthetic.pt {dc,dm}-*/policy.json 2>/dev/null)
