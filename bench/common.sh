# Shared set-up of the model benchmarks (sourced by run_models.sh and run_int8.sh, from the
# project root): the medq binary, the torchvision fixtures (generated with /usr/bin/python3 when
# absent) and onnxruntime-node (npm install --ignore-scripts when absent). A temp folder $TMP
# is removed on exit. bench_pair runs medq and ORT on one model, back to back.
MEDQ=${MEDQ:-build/medq}
FIX=${MEDQ_TORCHVISION_FIXTURES:-build/fixtures/torchvision}
[ -x "$MEDQ" ] || { echo "bench: $MEDQ not built (bash scripts/build.sh)" >&2; exit 1; }
if [ ! -d bench/ort/node_modules/onnxruntime-node ]; then
  (cd bench/ort && npm install --ignore-scripts --no-audit --no-fund >/dev/null)
fi
if [ ! -f "$FIX/manifest.json" ]; then
  /usr/bin/python3 tests/models/gen_torchvision.py "$FIX" --models resnet50,mobilenet_v2,efficientnet_b0,densenet121
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# bench_pair MODEL BATCH THREADS TAG: `medq bench` (with the caller's $ITERS and ${TUNE[@]}) and
# ORT's bench on the same file and setting -> $TMP/medq_TAG.json and $TMP/ort_TAG.json.
bench_pair() {
  local f=$1 b=$2 t=$3 tag=$4
  OMP_NUM_THREADS=$t "$MEDQ" bench "$f" --batch "$b" --threads "$t" --iters "$ITERS" --warmup 3 --json \
    "${TUNE[@]}" > "$TMP/medq_$tag.json"
  node bench/ort/ort_bench.js "$f" --batch "$b" --threads "$t" --iters "$ITERS" --warmup 3 --json \
    | tail -1 > "$TMP/ort_$tag.json"
}
