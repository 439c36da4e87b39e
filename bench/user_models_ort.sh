#!/usr/bin/env bash
# medq vs ONNX Runtime on models as users bring them (tests/models/gen_user_models.py: no
# metadata_props; NHWC single-channel sigmoid, 1-output sigmoid, multi-label sigmoid, softmax,
# single logit). For each model, with no flags at all: `medq preprocess` decodes its image folder
# (train + test splits) with the preprocessing medq infers from the input shape, ORT runs that
# .npy (bench/ort/ort_agree.js), `medq run` classifies the same image files, and the outputs are
# compared. Usage: bash bench/user_models_ort.sh [FIXTURE_DIR]   (from the project root)
set -euo pipefail
MEDQ=${MEDQ:-build/medq}
UFIX=${1:-${MEDQ_USER_FIXTURES:-build/fixtures/user}}
[ -x "$MEDQ" ] || { echo "bench: $MEDQ not built (bash scripts/build.sh)" >&2; exit 1; }
if [ ! -d bench/ort/node_modules/onnxruntime-node ]; then
  (cd bench/ort && npm install --ignore-scripts --no-audit --no-fund >/dev/null)
fi
[ -f "$UFIX/expected.json" ] || /usr/bin/python3 tests/models/gen_user_models.py "$UFIX"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
printf '| model | input | outputs (medq infers) | images | max abs output diff medq vs ORT | top-1 agreement |\n|---|---|---|---|---|---|\n'
for m in nhwc_gray_sigmoid binary1_sigmoid multilabel_sigmoid softmax3 logits1; do
  M="$UFIX/$m.onnx"
  "$MEDQ" preprocess "$UFIX/ds_$m" --model "$M" --split all -o "$TMP/x.npy" --labels-out "$TMP/l.csv" --quiet > /dev/null
  mapfile -t imgs < <(awk -F, 'NR > 1 { print $3 }' "$TMP/l.csv")
  "$MEDQ" run "$M" "${imgs[@]}" --quiet --save-output "$TMP/medq.npy" > /dev/null
  node bench/ort/ort_agree.js "$M" "$TMP/x.npy" --medq "$TMP/medq.npy" --json > "$TMP/agree.json"
  kind=$("$MEDQ" info "$M" --json | /usr/bin/python3 -c 'import json,sys; s=json.load(sys.stdin)["input_spec"]; print(s["outputs"], "/", s["preprocess"]["layout"], s["preprocess"]["color"])')
  shape=$("$MEDQ" info "$M" --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["inputs"][0]["shape"])')
  /usr/bin/python3 - "$m" "$shape" "$kind" "$TMP/agree.json" <<'PY'
import json, sys
m, shape, kind, f = sys.argv[1:]
a = json.load(open(f))
print(f"| {m} | {shape} | {kind} | {a['n']} | {a['max_abs_logit_diff']:.2e} | {a['agreement'] * 100:.1f}% |")
PY
done
