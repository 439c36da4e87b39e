#!/bin/bash
# Memory soak of `medq serve`: constant closed-loop load (real brain MRI JPEGs, multipart) for
# MINUTES minutes at CLIENTS concurrent clients; prints throughput, errors and the server's RSS
# after every minute, then the RSS growth over the second half (after warm-up: the per-batch-size
# plans, arenas and thread-local buffers exist by then).
#
#   bench/serve/soak.sh [BUILD_DIR] [MODEL.onnx]      env: MINUTES (10), CLIENTS (16), THREADS (2)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-$ROOT/build}
MODEL=${2:-$ROOT/../shared/data/models/brain_resnet18.onnx}
DATA=$ROOT/../shared/data/brain_mri
MINUTES=${MINUTES:-10}
CLIENTS=${CLIENTS:-16}
THREADS=${THREADS:-2}
MEDQ=$BUILD/medq
WORK=$(mktemp -d /tmp/medq_soak.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
[ -x "$MEDQ" ] || { echo "soak.sh: no medq binary at $MEDQ" >&2; exit 2; }
LOADGEN=$BUILD/medq_loadgen
if [ ! -x "$LOADGEN" ] || [ "$ROOT/bench/serve/loadgen.cc" -nt "$LOADGEN" ]; then
  g++ -O2 -std=c++17 "$ROOT/bench/serve/loadgen.cc" $(pkg-config --cflags --libs cpp-httplib) -pthread -o "$LOADGEN"
fi
awk -F, 'NR > 1 { sub(/\r$/, "") } NR > 1 && $3 == "test" && n++ < 64 { print "'"$DATA"'/" $1 }' "$DATA/manifest.csv" > "$WORK/images.txt"
mkdir -p "$WORK/models/brain"
cp "$MODEL" "$WORK/models/brain/fp32.onnx"
PORT=18437
"$MEDQ" serve --model-dir "$WORK/models" --port $PORT --threads "$THREADS" --quiet 2> "$WORK/serve.log" &
PID=$!
for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$PORT/v2/health/ready" > /dev/null 2>&1 && break; sleep 0.2; done
rss() { awk '/VmRSS/ { print $2 }' "/proc/$PID/status"; }
echo "minute,requests_per_s,errors,rss_kb,codes,transport_errors"
echo "0,,,$(rss),"
declare -a R
for m in $(seq 1 "$MINUTES"); do
  out=$("$LOADGEN" --port $PORT --path /v1/models/brain/predict --images "$WORK/images.txt" -c "$CLIENTS" -d 60 --warmup 0)
  R[$m]=$(rss)
  # codes: the load generator's status histogram (-1: no HTTP answer); transport_errors: for
  # those, httplib's error kind (Read, Write, Connection, ...)
  echo "$m,$(echo "$out" | sed -E 's/.*"throughput_rps": ?([0-9.]+).*/\1/'),$(echo "$out" | sed -E 's/.*"errors": ?([0-9]+).*/\1/'),${R[$m]},$(echo "$out" | sed -E 's/.*"codes": ?\{([^}]*)\}.*/\1/' | tr -d ' "' | tr , ' '),$(echo "$out" | sed -E 's/.*"transport_errors": ?\{([^}]*)\}.*/\1/' | tr -d ' "' | tr , ' ')"
done
half=$(( (MINUTES + 1) / 2 ))
echo "rss growth minute $half -> $MINUTES: $(( (R[$MINUTES] - R[$half]) / 1024 )) MiB"
