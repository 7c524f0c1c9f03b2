#!/usr/bin/env bash
# The GPU check: one command, at most ~8 minutes on one H100/H200, everything under one folder.
#
#     bash bench/gpu_check.sh [OUT]        # OUT defaults to $OUT, else ./gpu-check-<time>
#
# 1. tests/test_cuda.py: bf16 parity, compiled vs eager per attention form (sdpa, flex), the AOTI
#    package of the flat step (the ZeroGPU path), no host sync per frame, one copy of the weights;
# 2. Waypoint-1-Small (random weights, released-width autoencoder), compiled, 4 and 2 steps, cold
#    inductor cache, with TORCH_LOGS=recompiles,graph_breaks: pass/frame ms, fps, decode,
#    end-to-end fps, streamed fps with the JPEG encode (serial vs overlapped with the next frame),
#    attention kernels seen by the profiler, fraction of the FLOP floor, peak memory;
# 3. the same again with the cache now warm (a restart): compile time cold vs warm;
# 4. the same eager (no compile), fewer repeats;
# 5. summary.txt / summary.json side by side.
# GPU_CHECK_EXTRA=1 adds (past the budget) CUDA graphs (compile mode reduce-overhead) and compiled SDPA.
# Each stage has its own time limit so the whole stays within budget; a stage that fails leaves its
# log and the others still run. The random weights are written once (WEIGHTS, default /tmp).
set -u
cd "$(dirname "$0")/.."
OUT="${1:-${OUT:-gpu-check-$(date +%Y%m%d-%H%M%S)}}"
mkdir -p "$OUT"
export PYTHONPATH=.
export TORCHINDUCTOR_CACHE_DIR="$OUT/inductor-cache"     # starts empty: the first compiled run is cold
export TORCHINDUCTOR_FX_GRAPH_CACHE=1 TORCHINDUCTOR_AUTOGRAD_CACHE=1
WEIGHTS="${WEIGHTS:-/tmp/waypoint-1-small-random}"
START=$(date +%s)
stage() {  # stage NAME LIMIT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  echo "== $name (limit ${limit}s)" | tee -a "$OUT/stages.txt"
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc  $(( $(date +%s) - t0 ))s" | tee -a "$OUT/stages.txt"
  tail -n 3 "$OUT/$name.log" | sed 's/^/   /'
}

{ nvidia-smi; python -c "import torch, spaces; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
  torch.cuda.get_device_name(), torch.cuda.get_device_capability(), 'spaces', spaces.__version__ if hasattr(spaces, '__version__') else '')"; } \
  > "$OUT/env.txt" 2>&1

BENCH=(python -m bench.engine --model waypoint-1-small --weights-dir "$WEIGHTS" --steps 4 2 --warmup-frames 20)
stage test_cuda 150 python -m pytest -q -p no:cacheprovider -rA tests/test_cuda.py
TORCH_LOGS=recompiles,graph_breaks stage bench_compiled_cold 200 "${BENCH[@]}" --repeats 20 --json "$OUT/bench_compiled_cold.json"
TORCH_LOGS=recompiles,graph_breaks stage bench_compiled_warm 75 "${BENCH[@]}" --repeats 20 --json "$OUT/bench_compiled_warm.json"
stage bench_eager 60 "${BENCH[@]}" --compile off --repeats 5 --json "$OUT/bench_eager.json"
if [ -n "${GPU_CHECK_EXTRA:-}" ]; then   # beyond the 8-minute budget: CUDA graphs, and SDPA compiled
  TORCH_LOGS=recompiles,graph_breaks stage bench_reduce_overhead 240 "${BENCH[@]}" --compile reduce-overhead --repeats 20 --json "$OUT/bench_reduce_overhead.json"
  stage bench_compiled_sdpa 200 "${BENCH[@]}" --attention sdpa --repeats 20 --json "$OUT/bench_compiled_sdpa.json"
fi

python - "$OUT" > "$OUT/summary.txt" 2>&1 <<'EOF'
import json, pathlib, re, sys
out = pathlib.Path(sys.argv[1])
runs = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("bench_*.json"))}
keys = ["compiled", "attention", "attention_kernels", "load_s", "first_frame_s", "forward_ms", "forward_floor_ms",
        "fraction_of_peak", "per_steps", "decode_ms", "decode_gflop", "end_to_end", "streamed", "peak_memory_gb", "matmul_peak_tflops"]
for name, r in runs.items():
    print(f"## {name}")
    for k in keys:
        if k in r:
            print(f"  {k}: {r[k]}")
for log in sorted(out.glob("bench_*.log")):
    text = log.read_text(errors="replace")
    print(f"{log.stem}: {len(re.findall('Recompiling', text))} recompiles, {len(re.findall('Graph break', text))} graph breaks")
tests = (out / "test_cuda.log").read_text(errors="replace").strip().splitlines()[-1:] if (out / "test_cuda.log").exists() else []
print("test_cuda:", *tests)
json.dump({"runs": runs, "tests": tests}, open(out / "summary.json", "w"), indent=2)
EOF
cat "$OUT/summary.txt"
echo "total $(( $(date +%s) - START ))s; everything is in $OUT"
