#!/usr/bin/env bash
# One prepared GPU check, for a machine with a CUDA GPU and the binary built here (torch 2.11
# libraries at the path the binary was built against, or on LD_LIBRARY_PATH):
#   1. trains each built-in rule for a few steps on CUDA and on the CPU (ResNet-18, the paper's
#      width, 64×64 inputs, batch 128) and prints the time per step of both and their ratio;
#   2. runs a short CUDA sweep (config/sweeps/demo.toml, 144 runs) into a daemon and prints
#      runs/hour.
#   deploy/gpu-check.sh [BUILD_DIR]        (BUILD_DIR: target/release; output under $OUT or a
#                                           temporary folder)
# Exits non-zero when CUDA is not usable (nothing to measure). Its numbers go into the closing
# note of the cluster issue; until it has run on a GPU machine, say that it has not.
# A rehearsal without a GPU (every step, on the CPU, a 4-run sweep):
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_SWEEP=config/sweeps/demo-live.toml deploy/gpu-check.sh
set -euo pipefail
build=${1:-target/release}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
lrid=$build/lrid
version=$("$lrid" --version)
echo "$version"
device=${GPU_CHECK_DEVICE:-cuda}
sweep_file=${GPU_CHECK_SWEEP:-config/sweeps/demo.toml}
if [ "$device" = cuda ] && ! grep -q '^cuda usable' <<<"$version"; then
    echo "CUDA is not usable here: nothing to measure" >&2
    exit 1
fi
deploy/install.sh --plugins "$out/plugins" "$build" >/dev/null

steps_args=(--arch resnet18-v1 --task shapes --batch-size 128 --epochs 2 --train-examples 1024
            --eval-examples 64 --resolution 64 --width 1 --points 3 --no-record --quiet
            --plugins-dir "$out/plugins")
printf '%-24s %14s %14s %8s\n' rule "cpu ms/step" "$device ms/step" speedup
for rule in sgdm adam feedback-alignment information-alignment; do
    devices=(cpu); [ "$device" = cpu ] || devices+=("$device")
    for d in "${devices[@]}"; do
        "$lrid" train "${steps_args[@]}" --rule "$rule" --device "$d" \
            --report "$out/$rule-$d.json" > "$out/$rule-$d.log" 2>&1 \
            || { echo "train $rule on $d failed:" >&2; tail -5 "$out/$rule-$d.log" >&2; exit 1; }
    done
    python3 - "$out/$rule-cpu.json" "$out/$rule-$device.json" "$rule" <<'PY'
import json, sys
cpu, dev = (json.load(open(f))["report"]["step_seconds"] * 1e3 for f in sys.argv[1:3])
print(f"{sys.argv[3]:<24} {cpu:14.1f} {dev:14.1f} {cpu / dev:7.1f}x")
PY
done

"$lrid" serve --listen 127.0.0.1:0 --data-dir "$out/data" --plugins-dir "$out/plugins" \
    > "$out/serve.out" 2> "$out/serve.log" &
serve=$!
trap 'kill $serve 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q listening "$out/serve.out" 2>/dev/null && break; sleep 0.1; done
url=http://$(awk '{print $5; exit}' "$out/serve.out")
workers=${GPU_CHECK_WORKERS:-4}
start=$(date +%s.%N)
"$lrid" sweep run "$sweep_file" --server "$url" --device "$device" --workers "$workers" \
    --plugins-dir "$out/plugins" --state-dir "$out/sweep" --quiet
end=$(date +%s.%N)
runs=$("$lrid" sql "SELECT count(*) AS n FROM runs WHERE status = 'closed'" --server "$url" --format csv | tail -1)
python3 -c "import sys; s = $end - $start; print(f'$device sweep ($sweep_file): {$runs} runs in {s:.1f} s with $workers workers = {$runs * 3600 / s:.0f} runs/hour')"
echo "output in $out"
