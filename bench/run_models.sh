#!/usr/bin/env bash
# fp32 model benchmark: medq vs ONNX Runtime (onnxruntime-node) in the same
# invocation on the same machine. For every model, batch (1, 8) and thread count
# (1, 2) it runs `medq bench` and ORT's bench back to back and prints a table of
# latency/throughput and the ratio ORT time / medq time (> 1.0: medq is faster).
#
# usage: bash bench/run_models.sh [--models resnet50_op13,...] [--iters N] [--out results.json]
# needs: build/medq (scripts/build.sh), node + `cd bench/ort && npm install --ignore-scripts`,
#        the torchvision fixtures (generated here with /usr/bin/python3 if absent).
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=resnet50_op13,mobilenet_v2_op13,efficientnet_b0_op13,densenet121_op13
ITERS=20
OUT=""
BATCHES="1 8"
THREADS="1 2"
while [ $# -gt 0 ]; do
  case "$1" in
    --models) MODELS=$2; shift 2 ;;
    --iters) ITERS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --batches) BATCHES=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
. bench/common.sh
IFS=, read -ra MS <<< "$MODELS"
for m in "${MS[@]}"; do
  for b in $BATCHES; do
    for t in $THREADS; do
      echo "bench: $m batch=$b threads=$t" >&2
      OMP_NUM_THREADS=$t "$MEDQ" bench "$FIX/$m.onnx" --batch "$b" --threads "$t" --iters "$ITERS" --warmup 3 --json \
        > "$TMP/medq_${m}_b${b}_t${t}.json"
      node bench/ort/ort_bench.js "$FIX/$m.onnx" --batch "$b" --threads "$t" --iters "$ITERS" --warmup 3 --json \
        | tail -1 > "$TMP/ort_${m}_b${b}_t${t}.json"
    done
  done
done
python3 - "$TMP" "$OUT" "$MODELS" "$BATCHES" "$THREADS" <<'PY'
import json, sys, os
tmp, out, models, batches, threads = sys.argv[1], sys.argv[2], sys.argv[3].split(','), sys.argv[4].split(), sys.argv[5].split()
rows = []
print("| model | batch | threads | medq median ms | ORT median ms | medq ips | ORT ips | ratio (ORT/medq time) | medq RSS MiB | ORT RSS MiB |")
print("|---|---|---|---|---|---|---|---|---|---|")
for m in models:
    for b in batches:
        for t in threads:
            q = json.load(open(f"{tmp}/medq_{m}_b{b}_t{t}.json"))
            o = json.load(open(f"{tmp}/ort_{m}_b{b}_t{t}.json"))
            ratio = o["median_ms"] / q["median_ms"]
            rows.append({"model": m, "batch": int(b), "threads": int(t), "medq": q, "ort": o, "ratio": ratio})
            print(f"| {m} | {b} | {t} | {q['median_ms']:.2f} | {o['median_ms']:.2f} | {q['throughput_ips']:.1f} | "
                  f"{o['throughput_ips']:.1f} | {ratio:.2f}x | {q['peak_rss_mib']:.0f} | {o.get('peak_rss_mb', float('nan')):.0f} |")
if out:
    json.dump(rows, open(out, "w"), indent=1)
PY
