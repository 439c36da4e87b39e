#!/usr/bin/env bash
# int8 benchmark: medq int8 vs medq fp32 vs ONNX Runtime (onnxruntime-node) running
# the same QDQ file, in one invocation on the same machine.
#
# For each model (torchvision fixtures, 224x224) the script makes a static int8
# QDQ model with `medq quantize` (calibrated on real images from the shared brain
# MRI train split, preprocessed to 224x224 with ImageNet normalization), then times
# at each batch/thread setting:
#   medq fp32, medq int8, ORT fp32, ORT int8 (ORT loads the QDQ file and runs its
#   own int8 kernels after its QDQ fusion).
# and prints throughput and the two ratios the quantization issue asks for:
#   int8 speed-up = medq fp32 time / medq int8 time
#   vs ORT        = ORT int8 time / medq int8 time   (> 1.0: medq faster)
#
# usage: bash bench/run_int8.sh [--models resnet50_op13,mobilenet_v2_op13] [--batches "8"]
#                               [--threads "1 2"] [--iters N] [--repeat R] [--tune] [--calib MANIFEST]
#                               [--out results.json]
# --tune: medq picks each convolution's oneDNN implementation by timing (`medq bench --tune`).
# --repeat R runs the whole measurement R times (interleaved, so slow phases of a shared
# machine hit every engine alike) and reports per cell the median over the repeats of each
# engine's median time; the ratios are the medians of the per-repeat ratios, with their range.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=resnet50_op13,mobilenet_v2_op13
ITERS=10
REPEAT=1
TUNE=()
OUT=""
BATCHES="8"
THREADS="1 2"
CALIB=${MEDQ_SHARED_DATA:-../shared/data}/brain_mri/manifest.csv
while [ $# -gt 0 ]; do
  case "$1" in
    --models) MODELS=$2; shift 2 ;;
    --iters) ITERS=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --tune) TUNE=(--tune); shift ;;
    --out) OUT=$2; shift 2 ;;
    --batches) BATCHES=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --calib) CALIB=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
[ -f "$CALIB" ] || { echo "bench: calibration manifest $CALIB not found (--calib)" >&2; exit 1; }
. bench/common.sh
IFS=, read -ra MS <<< "$MODELS"
for m in "${MS[@]}"; do
  Q="$FIX/${m}_int8.onnx"
  if [ ! -f "$Q" ] || [ "$Q" -ot "$MEDQ" ]; then
    echo "bench: quantizing $m (64 calibration images)" >&2
    "$MEDQ" quantize "$FIX/$m.onnx" --calib "$CALIB" --split train --samples 64 --quiet \
      --resize 224,224 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 -o "$Q" >&2
  fi
done
for ((r = 1; r <= REPEAT; r++)); do
for m in "${MS[@]}"; do
  Q="$FIX/${m}_int8.onnx"
  for b in $BATCHES; do
    for t in $THREADS; do
      echo "bench: $m batch=$b threads=$t (repeat $r/$REPEAT)" >&2
      for kind in fp32 int8; do
        f="$FIX/$m.onnx"; [ $kind = int8 ] && f="$Q"
        bench_pair "$f" "$b" "$t" "${kind}_${m}_b${b}_t${t}_r${r}"
      done
    done
  done
done
done
python3 - "$TMP" "$OUT" "$MODELS" "$BATCHES" "$THREADS" "$REPEAT" <<'PY'
import json, statistics, sys
tmp, out, models, batches, threads = sys.argv[1], sys.argv[2], sys.argv[3].split(','), sys.argv[4].split(), sys.argv[5].split()
repeat = int(sys.argv[6])
rows = []
print("| model | batch | threads | medq fp32 ips | medq int8 ips | ORT fp32 ips | ORT int8 ips | int8 speed-up (medq fp32/int8 time) | medq int8 vs ORT int8 (ORT/medq time) |")
print("|---|---|---|---|---|---|---|---|---|")
med = statistics.median
for m in models:
    for b in batches:
        for t in threads:
            reps = [{k: json.load(open(f"{tmp}/{k.split('_')[0]}_{k.split('_')[1]}_{m}_b{b}_t{t}_r{r}.json"))
                     for k in ("medq_fp32", "medq_int8", "ort_fp32", "ort_int8")} for r in range(1, repeat + 1)]
            ups = [x["medq_fp32"]["median_ms"] / x["medq_int8"]["median_ms"] for x in reps]
            vss = [x["ort_int8"]["median_ms"] / x["medq_int8"]["median_ms"] for x in reps]
            ms = {k: med([x[k]["median_ms"] for x in reps]) for k in reps[0]}
            ips = {k: int(b) * 1000.0 / v for k, v in ms.items()}
            up, vs = med(ups), med(vss)
            rng = lambda v: f" ({min(v):.2f}-{max(v):.2f})" if len(v) > 1 else ""
            rows.append({"model": m, "batch": int(b), "threads": int(t), "repeats": reps, "median_ms": ms,
                         "int8_speedup": up, "int8_speedup_all": ups, "vs_ort_int8": vs, "vs_ort_int8_all": vss})
            print(f"| {m} | {b} | {t} | {ips['medq_fp32']:.1f} | {ips['medq_int8']:.1f} | "
                  f"{ips['ort_fp32']:.1f} | {ips['ort_int8']:.1f} | {up:.2f}x{rng(ups)} | {vs:.2f}x{rng(vss)} |")
if out:
    json.dump(rows, open(out, "w"), indent=1)
PY
