#!/usr/bin/env bash
# fp32 model benchmark: medq vs ONNX Runtime (onnxruntime-node) in the same
# invocation on the same machine. For every model, batch (1, 8) and thread count
# (1, 2) it runs `medq bench` and ORT's bench back to back and prints a table of
# latency/throughput and the ratio ORT time / medq time (> 1.0: medq is faster).
#
# usage: bash bench/run_models.sh [--models resnet50_op13,...] [--iters N] [--repeat R] [--tune]
#                                 [--out results.json]
#   --tune    medq picks each convolution's oneDNN implementation by timing (`medq bench --tune`;
#             the first run pays for it, the timed runs do not include it)
#   --repeat  R interleaved repeats; per cell the median of the per-repeat ratios (and their range)
# needs: build/medq (scripts/build.sh), node + `cd bench/ort && npm install --ignore-scripts`,
#        the torchvision fixtures (generated here with /usr/bin/python3 if absent).
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=resnet50_op13,mobilenet_v2_op13,efficientnet_b0_op13,densenet121_op13
ITERS=20
OUT=""
TUNE=()
REPEAT=1
BATCHES="1 8"
THREADS="1 2"
while [ $# -gt 0 ]; do
  case "$1" in
    --models) MODELS=$2; shift 2 ;;
    --iters) ITERS=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --tune) TUNE=(--tune); shift ;;
    --out) OUT=$2; shift 2 ;;
    --batches) BATCHES=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
. bench/common.sh
IFS=, read -ra MS <<< "$MODELS"
for ((r = 1; r <= REPEAT; r++)); do
for m in "${MS[@]}"; do
  for b in $BATCHES; do
    for t in $THREADS; do
      echo "bench: $m batch=$b threads=$t (repeat $r/$REPEAT)" >&2
      bench_pair "$FIX/$m.onnx" "$b" "$t" "${m}_b${b}_t${t}_r${r}"
    done
  done
done
done
python3 - "$TMP" "$OUT" "$MODELS" "$BATCHES" "$THREADS" "$REPEAT" <<'PY'
import json, statistics, sys, os
tmp, out, models, batches, threads = sys.argv[1], sys.argv[2], sys.argv[3].split(','), sys.argv[4].split(), sys.argv[5].split()
repeat = int(sys.argv[6])
med = statistics.median
rows = []
print("| model | batch | threads | medq median ms | ORT median ms | medq ips | ORT ips | ratio (ORT/medq time) | medq RSS MiB | ORT RSS MiB |")
print("|---|---|---|---|---|---|---|---|---|---|")
for m in models:
    for b in batches:
        for t in threads:
            qs = [json.load(open(f"{tmp}/medq_{m}_b{b}_t{t}_r{r}.json")) for r in range(1, repeat + 1)]
            os_ = [json.load(open(f"{tmp}/ort_{m}_b{b}_t{t}_r{r}.json")) for r in range(1, repeat + 1)]
            ratios = [o["median_ms"] / q["median_ms"] for q, o in zip(qs, os_)]
            ratio = med(ratios)
            qm, om = med([q["median_ms"] for q in qs]), med([o["median_ms"] for o in os_])
            rng = f" ({min(ratios):.2f}-{max(ratios):.2f})" if repeat > 1 else ""
            rows.append({"model": m, "batch": int(b), "threads": int(t), "medq": qs, "ort": os_, "ratio": ratio,
                         "ratios": ratios})
            print(f"| {m} | {b} | {t} | {qm:.2f} | {om:.2f} | {int(b) * 1000 / qm:.1f} | "
                  f"{int(b) * 1000 / om:.1f} | {ratio:.2f}x{rng} | {max(q['peak_rss_mib'] for q in qs):.0f} | "
                  f"{max(o.get('peak_rss_mb', float('nan')) for o in os_):.0f} |")
if out:
    json.dump(rows, open(out, "w"), indent=1)
PY
