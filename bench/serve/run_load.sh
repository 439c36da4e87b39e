#!/bin/bash
# Load benchmark of `medq serve` vs the seeds' FastAPI + uvicorn + PyTorch stack, same machine,
# same images, same closed-loop load generator (bench/serve/loadgen.cc), one invocation.
#
#   bench/serve/run_load.sh [BUILD_DIR] [MODEL.onnx]
# env: DURATION (s per level, default 15), LEVELS ("1 4 16 64"), THREADS (compute threads, 2),
#      INSTANCES (the server's --instances, 1), SERVE_THREADS (the server's --threads, THREADS),
#      SEEDS=0 to skip the FastAPI stack, SELECTION (fp32|auto; default fp32: same model as seeds),
#      SAT_REPEAT (paired bench/serve saturation measurements, default 3),
#      INT8_MODEL + INT8_REPORT (the bundle's compressed model and its `medq validate` report.json;
#      with SELECTION=auto|compressed the benches run INT8_MODEL, the model that then answers).
# Prints one JSON line per (server, level), `medq bench --batch 8` and a summary table.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-$ROOT/build}
MODEL=${2:-$ROOT/../shared/data/models/brain_resnet18.onnx}
DATA=$ROOT/../shared/data/brain_mri
DURATION=${DURATION:-15}
LEVELS=${LEVELS:-"1 4 16 64"}
THREADS=${THREADS:-2}
SELECTION=${SELECTION:-fp32}
SAT_REPEAT=${SAT_REPEAT:-3}
INSTANCES=${INSTANCES:-1}
SERVE_THREADS=${SERVE_THREADS:-$THREADS}
MEDQ=$BUILD/medq
WORK=$(mktemp -d /tmp/medq_serve_bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

[ -x "$MEDQ" ] || { echo "run_load.sh: no medq binary at $MEDQ" >&2; exit 2; }
[ -f "$MODEL" ] || { echo "run_load.sh: no model at $MODEL" >&2; exit 2; }
LOADGEN=$BUILD/medq_loadgen
if [ ! -x "$LOADGEN" ] || [ "$ROOT/bench/serve/loadgen.cc" -nt "$LOADGEN" ]; then
  echo "building $LOADGEN" >&2
  g++ -O2 -std=c++17 "$ROOT/bench/serve/loadgen.cc" $(pkg-config --cflags --libs cpp-httplib) -pthread -o "$LOADGEN"
fi

# 64 real test images (JPEG, 224x224, RGB and greyscale).
awk -F, 'NR > 1 { sub(/\r$/, "") } NR > 1 && $3 == "test" && n++ < 64 { print "'"$DATA"'/" $1 }' "$DATA/manifest.csv" > "$WORK/images.txt"
mkdir -p "$WORK/models/brain"
cp "$MODEL" "$WORK/models/brain/fp32.onnx"
BENCH_MODEL=$MODEL
if [ -n "${INT8_MODEL:-}" ]; then
  cp "$INT8_MODEL" "$WORK/models/brain/model.onnx" && cp "$INT8_REPORT" "$WORK/models/brain/report.json"
  if [ "$SELECTION" != fp32 ]; then BENCH_MODEL=$INT8_MODEL; fi
fi

wait_http() {  # port path
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$1$2" > /dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "run_load.sh: server on port $1 did not become ready" >&2
  return 1
}
rss_kb() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }

echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (shared machine: figures are noisy)"
echo "== medq bench $BENCH_MODEL --batch 8 --threads $THREADS"
OMP_NUM_THREADS=$THREADS "$MEDQ" bench "$BENCH_MODEL" --batch 8 --threads "$THREADS" | tee "$WORK/bench.txt"

PORT=18431
"$MEDQ" serve --model-dir "$WORK/models" --port $PORT --threads "$SERVE_THREADS" --instances "$INSTANCES" --quiet --selection "$SELECTION" \
  2> "$WORK/serve.log" &
SERVE_PID=$!
wait_http $PORT /v2/health/ready
echo "== medq serve --threads $SERVE_THREADS --instances $INSTANCES (pid $SERVE_PID) rss at start: $(rss_kb $SERVE_PID) kB"
for c in $LEVELS; do
  printf '{"server": "medq", ' ; "$LOADGEN" --port $PORT --path /v1/models/brain/predict --images "$WORK/images.txt" \
    -c "$c" -d "$DURATION" --warmup 2 | sed 's/^{//'
done | tee "$WORK/medq.jsonl"
# Saturation vs `medq bench`, paired in time (the machine drifts by 10-15% within minutes): SAT_REPEAT
# alternations of `medq bench --batch 8` (the server idle), `medq bench --batch 8 --images` (the
# same 64 JPEGs decoded + preprocessed per batch on the same threads: the offline pipeline) and 64
# clients on the server; the ratios of each round, their median and range.
for r in $(seq 1 "$SAT_REPEAT"); do
  ips=$(OMP_NUM_THREADS=$THREADS "$MEDQ" bench "$BENCH_MODEL" --batch 8 --threads "$THREADS" --min-time 5 --json \
        | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["throughput_ips"])')
  pipe=$(OMP_NUM_THREADS=$THREADS "$MEDQ" bench "$BENCH_MODEL" --batch 8 --threads "$THREADS" --min-time 5 --json \
         --images "$WORK/images.txt" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["throughput_ips"])')
  rps=$("$LOADGEN" --port $PORT --path /v1/models/brain/predict --images "$WORK/images.txt" -c 64 -d 6 --warmup 1 \
        | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["throughput_rps"])')
  echo "{\"pair\": $r, \"bench_ips\": $ips, \"pipeline_ips\": $pipe, \"serve_rps\": $rps}" | tee -a "$WORK/sat.jsonl"
done
echo "== medq serve rss at end: $(rss_kb $SERVE_PID) kB"
curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^medq_(batch_size_(sum|count)|compute_seconds_(sum|count)|decode_seconds_(sum|count)|model_used_total|errors_total)' || true
kill -TERM $SERVE_PID
wait $SERVE_PID || true
# medq bench again after the load (the machine drifts): the saturation ratio uses the mean of both.
echo "== medq bench again (after the load)"
OMP_NUM_THREADS=$THREADS "$MEDQ" bench "$BENCH_MODEL" --batch 8 --threads "$THREADS" | tee "$WORK/bench2.txt"

if [ "${SEEDS:-1}" != 0 ]; then
  SPORT=18432
  MODEL="$MODEL" TORCH_THREADS=$THREADS /usr/bin/python3 "$ROOT/bench/serve/seeds_fastapi.py" --port $SPORT \
    2> "$WORK/seeds.log" &
  SEEDS_PID=$!
  wait_http $SPORT /health
  for c in $LEVELS; do
    printf '{"server": "seeds_fastapi", ' ; "$LOADGEN" --port $SPORT --path /predict --images "$WORK/images.txt" \
      -c "$c" -d "$DURATION" --warmup 2 | sed 's/^{//'
  done | tee "$WORK/seeds.jsonl"
  kill -TERM $SEEDS_PID
  wait $SEEDS_PID || true
fi

/usr/bin/python3 - "$WORK" <<'PY'
import json, sys, os
w = sys.argv[1]
rows = {}
for name in ("medq", "seeds"):
    p = os.path.join(w, name + ".jsonl")
    if os.path.exists(p):
        for l in open(p):
            j = json.loads(l)
            rows.setdefault(j["concurrency"], {})[j["server"]] = j
print("\n| clients | medq req/s | p50 ms | p95 ms | p99 ms | errors | seeds req/s | p50 ms | p95 ms | p99 ms | errors | ratio |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for c in sorted(rows):
    m, s = rows[c].get("medq"), rows[c].get("seeds_fastapi")
    f = lambda j: f"{j['throughput_rps']:.1f} | {j['p50_ms']:.1f} | {j['p95_ms']:.1f} | {j['p99_ms']:.1f} | {j['errors']}" if j else "- | - | - | - | -"
    ratio = f"{m['throughput_rps'] / s['throughput_rps']:.2f}x" if m and s and s["throughput_rps"] > 0 else "-"
    print(f"| {c} | {f(m)} | {f(s)} | {ratio} |")
import re
ips = []
for b in ("bench.txt", "bench2.txt"):
    p = os.path.join(w, b)
    if os.path.exists(p):
        mm = re.search(r"throughput\s+([0-9.]+)", open(p).read())
        if mm:
            ips.append(float(mm.group(1)))
sat = max((r["medq"]["throughput_rps"] for r in rows.values() if "medq" in r), default=0)
if ips and sat:
    ref = sum(ips) / len(ips)
    print(f"\nsaturation (levels): medq serve {sat:.1f} req/s vs medq bench --batch 8 {ref:.1f} img/s "
          f"(mean of {', '.join(f'{x:.1f}' for x in ips)}): {sat / ref:.2f}x")
p = os.path.join(w, "sat.jsonl")
if os.path.exists(p):
    pairs = [json.loads(l) for l in open(p) if l.strip()]
    rs = sorted(q["serve_rps"] / q["bench_ips"] for q in pairs if q["bench_ips"] > 0)
    if rs:
        med = rs[len(rs) // 2] if len(rs) % 2 else (rs[len(rs) // 2 - 1] + rs[len(rs) // 2]) / 2
        print(f"saturation (paired): median {med:.2f}x of {len(rs)} pairs (range {rs[0]:.2f}-{rs[-1]:.2f}); "
              + ", ".join(f"{q['serve_rps']:.1f}/{q['bench_ips']:.1f}" for q in pairs))
    ps = sorted(q["serve_rps"] / q["pipeline_ips"] for q in pairs if q.get("pipeline_ips", 0) > 0)
    if ps:
        med = ps[len(ps) // 2] if len(ps) % 2 else (ps[len(ps) // 2 - 1] + ps[len(ps) // 2]) / 2
        print(f"saturation vs the offline pipeline (bench --images, paired): median {med:.2f}x "
              f"(range {ps[0]:.2f}-{ps[-1]:.2f}); " + ", ".join(f"{q['serve_rps']:.1f}/{q['pipeline_ips']:.1f}" for q in pairs))
PY
