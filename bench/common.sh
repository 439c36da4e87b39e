# Shared set-up of the model benchmarks (sourced by run_models.sh and run_int8.sh, from the
# project root): the medq binary, the torchvision fixtures (generated with /usr/bin/python3 when
# absent) and onnxruntime-node (npm install --ignore-scripts when absent). A temp folder $TMP
# is removed on exit.
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
