#!/usr/bin/env bash
# The GPU check (one CUDA device, under 5 minutes): the CUDA tests, a short Fashion-MNIST distillation, and the
# speed benchmarks on the device; prints one table and leaves the logs and JSON in $OUT (default: a temp folder).
#
#     bash benchmarks/gpu_check.sh            # from the repository root, on a machine with a GPU
#
# Fashion-MNIST must be in /usr/share/datasets/fashion-mnist. Each stage is time-boxed so that the whole check ends
# in under 5 minutes even when a stage hangs (the benchmark writes its JSON after every section, so a cut run keeps
# what it measured); a stage that fails or times out shows so in the table.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
start=$(date +%s)

python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "gpu_check: no CUDA device visible to torch"; exit 1; }

timeout 90 python -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider > "$OUT/tests.log" 2>&1
tests_rc=$?

# Wang et al. on Fashion-MNIST, ConvNet-3 width 128 without norm, 10 images per class, K = 10, 4 θ₀ draws a step
t0=$(date +%s)
timeout 100 python -m augdistill distill --dataset fashion-mnist --device cuda \
    --model convnet --width 128 --norm none --ipc 10 --inner-steps 10 --num-inits 4 --real-per-class 20 \
    --iterations 300 --eval-every 100 --eval-nets 2 --final-nets 5 --checkpoint-every 100 \
    --out "$OUT/fashion-mnist" > "$OUT/distill.log" 2>&1
distill_rc=$?
distill_s=$(( $(date +%s) - t0 ))

timeout 100 python benchmarks/bench_scale.py --device cuda --quick --compile --out "$OUT/scale-cuda.json" \
    > "$OUT/bench.log" 2>&1
bench_rc=$?

OUT="$OUT" TESTS_RC=$tests_rc DISTILL_RC=$distill_rc DISTILL_S=$distill_s BENCH_RC=$bench_rc \
TOTAL_S=$(( $(date +%s) - start )) python - <<'EOF'
import json, os, re
from pathlib import Path

out = Path(os.environ["OUT"])
rows = []
def status(rc): return "ok" if rc == "0" else ("TIMED OUT" if rc == "124" else f"FAILED (exit {rc})")

tests = (out / "tests.log").read_text() if (out / "tests.log").exists() else ""
summary = re.findall(r"(\d+ (?:passed|failed|skipped|error)\w*)", tests.splitlines()[-1] if tests else "")
rows.append(("CUDA tests (tests/test_cuda.py)", status(os.environ["TESTS_RC"]), ", ".join(summary)))

metrics = out / "fashion-mnist" / "metrics.json"
if metrics.exists():
    m = json.loads(metrics.read_text())
    r = m.get("test_replay", {})
    acc = f"replay test {100 * r['mean']:.2f} ± {100 * r['std']:.2f}% ({len(r['accs'])} nets)" if r else "no replay"
    rows.append(("Fashion-MNIST distillation, 300 steps", status(os.environ["DISTILL_RC"]),
                 f"{acc}; selected it. {m['selected_iteration']}; {os.environ['DISTILL_S']} s"))
else:
    rows.append(("Fashion-MNIST distillation, 300 steps", status(os.environ["DISTILL_RC"]), "no metrics.json"))

scale = out / "scale-cuda.json"
if scale.exists():
    s = json.loads(scale.read_text())
    rows.append(("device", "", f"{s['meta']['gpu']}, torch {s['meta']['torch']}"))
    for r in s.get("cost_ratio", []):
        rows.append((f"cost ratio, {r['case']}", "", f"{r['ratio']:.2f} (outer step {1000 * r['outer_step_s']:.1f} ms)"))
    for r in s.get("higher", [])[1:]:
        rows.append((f"vs higher: {r['how']}", "", f"{r['speedup_vs_higher']:.2f}x faster, "
                     f"{r['memory_vs_higher']:.2f}x its peak memory, rel. err {r['max_rel_err']:.1e}"))
    for r in s.get("scaling", {}).get("K", []):
        rows.append((f"checkpoint every step, K={r['K']}", "", f"memory x{r['memory_ratio']:.2f}, "
                     f"time x{r['time_ratio']:.2f}, rel. err {r['max_rel_err']:.1e}"))
    for r in s.get("draws", []):
        rows.append((f"vmap of 4 draws, {r['case']}", "", f"{r['vmap_speedup']:.2f}x the loop"))
    for r in s.get("precision", []):
        if r["how"] != "ours":
            rows.append((f"{r['how']}, {r['case']}", "", f"{r['speedup']:.2f}x fp32, cosine {r['cosine_vs_fp32']:.4f}, "
                         f"first call {r['first_call_s']:.1f} s"))
    if os.environ["BENCH_RC"] != "0":
        rows.append(("speed benchmarks", status(os.environ["BENCH_RC"]), "sections above were measured"))
else:
    rows.append(("speed benchmarks", status(os.environ["BENCH_RC"]), "no scale-cuda.json"))

rows.append(("total", "", f"{os.environ['TOTAL_S']} s; logs in {out}"))
width = max(len(r[0]) for r in rows)
print(f"| {'check'.ljust(width)} | status | result |")
print(f"|{'-' * (width + 2)}|--------|--------|")
for name, state, result in rows:
    print(f"| {name.ljust(width)} | {state or 'ok'} | {result} |")
EOF
