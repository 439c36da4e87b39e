#!/bin/sh
# Builds seed corpora and runs each libFuzzer target for SECONDS (default 60).
# Usage: tests/fuzz/run_fuzzers.sh [BUILD_DIR=build-fuzz] [SECONDS=60]
set -eu
SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-$SRC/build-fuzz}
SECS=${2:-60}
CORPUS=$BUILD/corpus
mkdir -p "$CORPUS/model_seed" "$CORPUS/model" "$CORPUS/image_seed" "$CORPUS/image" "$BUILD/crashes"

# Models: the small ONNX backend node tests (< 4 KiB each).
NODE=/usr/share/libonnx-testdata/data/node
if [ -d "$NODE" ]; then
  for m in "$NODE"/test_*/model.onnx; do
    [ "$(stat -c %s "$m")" -lt 4096 ] || continue
    cp "$m" "$CORPUS/model_seed/$(basename "$(dirname "$m")").onnx"
  done
fi
# Images: the PNG/JPEG test images and the shared DICOM samples.
cp "$SRC"/tests/data/image/*.png "$SRC"/tests/data/image/*.jpg "$CORPUS/image_seed/" 2>/dev/null || true
cp "$SRC"/../shared/data/dicom/*.dcm "$CORPUS/image_seed/" 2>/dev/null || true

run() {
  name=$1; shift
  echo "== $name (${SECS}s)"
  "$BUILD/tests/fuzz/$name" "$@" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=4096 \
    -artifact_prefix="$BUILD/crashes/$name-" -print_final_stats=1 2>&1 | tail -25
}
ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 OMP_NUM_THREADS=1 \
  run fuzz_model_loader -max_len=16384 "$CORPUS/model" "$CORPUS/model_seed"
# DCMTK allocates an element's declared length (up to 4 GiB) before finding that the data
# ends early; the pages are never touched (RSS stays small), so allow big mallocs here.
ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 \
  run fuzz_image_decoder -max_len=65536 -malloc_limit_mb=8192 "$CORPUS/image" "$CORPUS/image_seed"
