#!/usr/bin/env bash
# Held-out validation split of the skin (HAM10000) training rows, for `medq quantize --eval`
# (mixed precision is tuned on it, never on the test split).
#
# Writes a copy of the manifest with absolute image paths in which every `train` row whose
# lesion is selected by int(md5(lesion_id), 16) % 8 == 0 (~1/8 of the lesions; all images of
# a lesion stay together, so no lesion is in both calibration and evaluation) gets split `val`.
# test rows are unchanged. Deterministic: same input -> same output.
#
# usage: bash bench/make_val_split.sh [MANIFEST] [OUT.csv]
#   default MANIFEST: ${MEDQ_SHARED_DATA:-../shared/data}/skin_ham10000/manifest.csv
#   default OUT: /tmp/medq_val/skin_ham10000.csv
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${MEDQ_SHARED_DATA:-../shared/data}
MAN=${1:-$DATA/skin_ham10000/manifest.csv}
OUT=${2:-/tmp/medq_val/skin_ham10000.csv}
[ -f "$MAN" ] || { echo "make_val_split: no manifest $MAN" >&2; exit 1; }
mkdir -p "$(dirname "$OUT")"
/usr/bin/python3 - "$MAN" "$OUT" <<'PY'
import csv, hashlib, os, sys
man, out = sys.argv[1], sys.argv[2]
base = os.path.dirname(os.path.abspath(man))
with open(man, newline="") as f:
    r = csv.DictReader(f)
    fields, rows = r.fieldnames, list(r)
for k in ("path", "split", "lesion_id"):
    if k not in fields:
        sys.exit(f"make_val_split: {man}: no '{k}' column")
moved = 0
for row in rows:
    if not os.path.isabs(row["path"]):
        row["path"] = os.path.join(base, row["path"])
    if row["split"] == "train" and int(hashlib.md5(row["lesion_id"].encode()).hexdigest(), 16) % 8 == 0:
        row["split"] = "val"
        moved += 1
tmp = out + ".tmp"
with open(tmp, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
os.replace(tmp, out)
print(f"make_val_split: {out}: {moved} train rows -> val, {len(rows)} rows", file=sys.stderr)
PY
