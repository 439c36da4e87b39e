#!/usr/bin/env bash
# Quantization accuracy on the real reference models (issue 3, "What it must show" 1-3).
#
# For each reference model and each calibration method (minmax, percentile 99.99, entropy, mse):
#   medq quantize  (static int8 QDQ, 500 images of the train split, balanced by the label)
#   medq validate  fp32 vs int8 on the whole test split: accuracy, agreement, macro-F1, balanced acc.
# plus the fp16 model (medq convert --fp16), the file size ratios, and ONNX Runtime agreement:
#   medq preprocess  test split -> one float32 .npy (exactly medq's inputs)
#   node bench/ort/ort_agree.js  ORT on that .npy vs `medq run` on the same images (top-1 agreement)
# for fp32, the default (minmax) int8 model and fp16. For skin also the accuracy-driven mixed
# precision model (`--mixed A`, default 0.995): percentile 99.99, `--min-agreement A` tuned on a
# held-out `val` slice of train (bench/make_val_split.sh; never on test), the fallen-back layers'
# weights stored as float16 (`--fallback-weights fp16`). Prints markdown tables; everything
# (models, reports, logs, summary.json, tables.md) stays in the work folder.
#
# usage: bash bench/quant_accuracy.sh [--models brain,skin] [--methods minmax,percentile,entropy,mse]
#            [--samples 500] [--threads 2] [--mixed 0.995|0] [--work DIR]
# needs: build/medq (or MEDQ=path), node + bench/ort/node_modules, /usr/bin/python3 (summary only),
#        the shared data (MEDQ_SHARED_DATA, default ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=brain,skin
METHODS=minmax,percentile,entropy,mse
SAMPLES=500
THREADS=2
WORK=""
MIXED=0.995
while [ $# -gt 0 ]; do
  case "$1" in
    --models) MODELS=$2; shift 2 ;;
    --methods) METHODS=$2; shift 2 ;;
    --samples) SAMPLES=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --mixed) MIXED=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "quant_accuracy: unknown flag $1" >&2; exit 2 ;;
  esac
done
MEDQ=${MEDQ:-build/medq}
DATA=${MEDQ_SHARED_DATA:-../shared/data}
[ -x "$MEDQ" ] || { echo "quant_accuracy: $MEDQ not built (bash scripts/build.sh)" >&2; exit 1; }
[ -d "$DATA/models" ] || { echo "quant_accuracy: no shared data at $DATA (set MEDQ_SHARED_DATA)" >&2; exit 1; }
if [ ! -d bench/ort/node_modules/onnxruntime-node ]; then
  (cd bench/ort && npm install --ignore-scripts --no-audit --no-fund >/dev/null)
fi
if [ -z "$WORK" ]; then WORK=$(mktemp -d /tmp/medq_quant_accuracy.XXXXXX); fi
mkdir -p "$WORK"
echo "quant_accuracy: work folder $WORK ($("$MEDQ" version), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
export OMP_NUM_THREADS=$THREADS

step() {  # step NAME CMD...: runs CMD with its output in $WORK/NAME.log, prints the time taken
  local name=$1; shift
  local t0=$SECONDS rc=0
  "$@" > "$WORK/$name.log" 2>&1 || rc=$?
  echo "  $name: exit $rc, $((SECONDS - t0))s" >&2
  echo "$rc" > "$WORK/$name.rc"
  return 0
}

IFS=, read -ra MS <<< "$MODELS"
IFS=, read -ra METH <<< "$METHODS"
for m in "${MS[@]}"; do
  case "$m" in
    brain) FP32=$DATA/models/brain_resnet18.onnx; MAN=$DATA/brain_mri/manifest.csv; LC=label ;;
    skin) FP32=$DATA/models/skin_mobilenet_v2.onnx; MAN=$DATA/skin_ham10000/manifest.csv; LC=dx ;;
    *) echo "quant_accuracy: unknown model '$m' (brain, skin)" >&2; exit 2 ;;
  esac
  echo "== $m: $FP32" >&2
  for meth in "${METH[@]}"; do
    extra=()
    [ "$meth" = percentile ] && extra=(--percentile 99.99)
    step "$m.quantize.$meth" "$MEDQ" quantize "$FP32" --calib "$MAN" --split train --label-column "$LC" \
      --samples "$SAMPLES" --balance-by "$LC" --method "$meth" "${extra[@]}" --quiet \
      -o "$WORK/$m.int8.$meth.onnx" --report "$WORK/$m.int8.$meth.report.json"
    # Gate verdicts do not matter here (exit 1 = REJECTED still writes the report).
    step "$m.validate.$meth" "$MEDQ" validate --reference "$FP32" --candidate "$WORK/$m.int8.$meth.onnx" \
      --data "$MAN" --split test --label-column "$LC" --threads "$THREADS" --quiet --report "$WORK/$m.val.$meth"
  done
  if [ "$m" = skin ] && [ "$MIXED" != 0 ]; then
    step "$m.valsplit" bash bench/make_val_split.sh "$MAN" "$WORK/$m.valsplit.csv"
    step "$m.quantize.mixed" "$MEDQ" quantize "$FP32" --calib "$WORK/$m.valsplit.csv" --split train --label-column "$LC" \
      --samples "$SAMPLES" --balance-by "$LC" --method percentile --percentile 99.99 --min-agreement "$MIXED" \
      --fallback-weights fp16 --eval "$WORK/$m.valsplit.csv" --eval-split val --quiet \
      -o "$WORK/$m.int8.mixed.onnx" --report "$WORK/$m.int8.mixed.report.json"
    step "$m.validate.mixed" "$MEDQ" validate --reference "$FP32" --candidate "$WORK/$m.int8.mixed.onnx" \
      --data "$MAN" --split test --label-column "$LC" --threads "$THREADS" --quiet --report "$WORK/$m.val.mixed"
  fi
  step "$m.convert.fp16" "$MEDQ" convert --fp16 "$FP32" -o "$WORK/$m.fp16.onnx"
  step "$m.validate.fp16" "$MEDQ" validate --reference "$FP32" --candidate "$WORK/$m.fp16.onnx" \
    --data "$MAN" --split test --label-column "$LC" --threads "$THREADS" --quiet --report "$WORK/$m.val.fp16"

  # ORT agreement on exactly medq's inputs.
  step "$m.preprocess" "$MEDQ" preprocess "$MAN" --model "$FP32" --split test --label-column "$LC" --quiet \
    -o "$WORK/$m.test.npy" --labels-out "$WORK/$m.test.csv"
  mapfile -t PATHS < <(/usr/bin/python3 -c 'import csv,sys; [print(r["path"]) for r in csv.DictReader(open(sys.argv[1]))]' "$WORK/$m.test.csv")
  for v in fp32 int8.minmax int8.mixed fp16; do
    model=$WORK/$m.$v.onnx
    [ "$v" = fp32 ] && model=$FP32
    [ -f "$model" ] || continue
    step "$m.medqrun.$v" "$MEDQ" run "$model" "${PATHS[@]}" --batch 16 --threads "$THREADS" --top-k 1 \
      --save-output "$WORK/$m.$v.medq.npy"
    medq_flag=()
    [ "$(cat "$WORK/$m.medqrun.$v.rc")" = 0 ] && medq_flag=(--medq "$WORK/$m.$v.medq.npy")
    step "$m.ort.$v" node bench/ort/ort_agree.js "$model" "$WORK/$m.test.npy" --labels "$WORK/$m.test.csv" \
      "${medq_flag[@]}" --threads "$THREADS" --out "$WORK/$m.$v.ort.csv" --json
  done
  # Keep the large preprocessed batch only as long as it is needed.
  rm -f "$WORK/$m.test.npy"
done

/usr/bin/python3 - "$WORK" "$MODELS" "$METHODS" "$DATA" <<'PY'
import json, os, sys
work, models, methods, data = sys.argv[1], sys.argv[2].split(','), sys.argv[3].split(','), sys.argv[4]
fp32_files = {"brain": f"{data}/models/brain_resnet18.onnx", "skin": f"{data}/models/skin_mobilenet_v2.onnx"}

def load(p):
    try:
        return json.load(open(p))
    except Exception:
        return None

def ort(m, v):
    p = f"{work}/{m}.ort.{v}.log"
    if not os.path.exists(p):
        return None
    for line in open(p).read().splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)
    return None

def err(name):
    p = f"{work}/{name}.log"
    lines = [l for l in open(p).read().splitlines() if "error" in l] if os.path.exists(p) else []
    return lines[-1] if lines else ""

pct = lambda x: "n/a" if x is None else f"{100 * x:.2f}%"
f4 = lambda x: "n/a" if x is None else f"{x:.4f}"
summary, out = {}, []
for m in models:
    fp32_size = os.path.getsize(fp32_files[m])
    rows = []
    ref = None
    mixed = ["int8.mixed"] if os.path.exists(f"{work}/{m}.int8.mixed.onnx") else []
    for v in [f"int8.{x}" for x in methods] + mixed + ["fp16"]:
        tag = v.split(".")[-1]
        rep = load(f"{work}/{m}.val.{tag}/report.json")
        mf = f"{work}/{m}.{v}.onnx"
        size = os.path.getsize(mf) if os.path.exists(mf) else None
        r = {"variant": v, "size_ratio": size / fp32_size if size else None}
        if rep:
            ref = ref or rep["reference"]
            c, p = rep["candidate"], rep["paired"]
            r.update(accuracy=c["accuracy"], macro_f1=c["macro"]["f1"], balanced_accuracy=c["balanced_accuracy"],
                     agreement=1 - p["disagreement_rate"], drop_pp=100 * p["accuracy_drop"],
                     max_abs_logit_diff=p["max_abs_logit_diff"])
        else:
            r["medq_error"] = err(f"{m}.validate.{tag}") or err(f"{m}.quantize.{tag}") or err(f"{m}.convert.{tag}")
        o = ort(m, v)
        if o:
            r["ort_accuracy"] = o.get("ort_accuracy")
            r["ort_agreement"] = o.get("agreement")
            r["ort_max_abs_logit_diff"] = o.get("max_abs_logit_diff")
        rows.append(r)
    o32 = ort(m, "fp32")
    summary[m] = {"fp32": ref, "fp32_ort": o32, "rows": rows}
    out.append(f"\n### {m}: {os.path.basename(fp32_files[m])} (test split, n={ref['n'] if ref else '?'})\n")
    out.append("| model | accuracy | Δ vs fp32 (pp) | agreement with fp32 | macro-F1 | balanced acc | file size vs fp32 | ORT accuracy | ORT vs medq top-1 | targets |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    if ref:
        out.append(f"| fp32 | {f4(ref['accuracy'])} | | | {f4(ref['macro']['f1'])} | {f4(ref['balanced_accuracy'])} | 1.000x | "
                   f"{f4(o32 and o32.get('ort_accuracy'))} | {pct(o32 and o32.get('agreement'))} | |")
    for r in rows:
        name = r["variant"].replace("int8.percentile", "int8 percentile 99.99").replace(
            "int8.mixed", "int8 mixed (val-tuned, fp16 fallback weights)").replace("int8.", "int8 ")
        size = "n/a" if r["size_ratio"] is None else f"{r['size_ratio']:.3f}x"
        if "accuracy" in r:
            is16 = r["variant"] == "fp16"
            ok_acc = abs(r["drop_pp"]) <= (0.1 if is16 else 0.5)
            ok_agree = is16 or r["agreement"] >= 0.99
            ok_size = r["size_ratio"] is not None and r["size_ratio"] <= (0.51 if is16 else 0.27)
            ok_ort = r.get("ort_agreement") is None or r["ort_agreement"] >= 0.99
            fails = [n for n, ok in (("accuracy", ok_acc), ("agreement", ok_agree), ("size", ok_size), ("ORT", ok_ort)) if not ok]
            verdict = "PASS" if not fails else "MISS: " + ", ".join(fails)
            out.append(f"| {name} | {f4(r['accuracy'])} | {0.0 - r['drop_pp']:+.2f} | {pct(r['agreement'])} | {f4(r['macro_f1'])} | "
                       f"{f4(r['balanced_accuracy'])} | {size} | {f4(r.get('ort_accuracy'))} | {pct(r.get('ort_agreement'))} | {verdict} |")
        else:
            out.append(f"| {name} | n/a (medq: {r.get('medq_error', '')[:90]}) | | | | | {size} | {f4(r.get('ort_accuracy'))} | "
                       f"{pct(r.get('ort_agreement'))} | |")
text = "\n".join(out) + "\n"
print(text)
open(f"{work}/tables.md", "w").write(text)
json.dump(summary, open(f"{work}/summary.json", "w"), indent=1)
PY
echo "quant_accuracy: tables in $WORK/tables.md, numbers in $WORK/summary.json" >&2
