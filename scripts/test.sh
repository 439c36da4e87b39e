#!/usr/bin/env bash
# The whole test suite: builds, generates the torchvision fixtures (if PyTorch is
# available and they are not cached yet), then runs every test with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
BUILD_DIR=${BUILD_DIR:-build}
FIX="$BUILD_DIR/fixtures/torchvision"
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c "import torch, torchvision, onnx" 2>/dev/null; then
  if [ ! -f "$FIX/manifest.json" ]; then
    echo "test: generating torchvision fixtures into $FIX (once, ~3 min)"
    /usr/bin/python3 tests/models/gen_torchvision.py "$FIX"
  fi
  UFIX="$BUILD_DIR/fixtures/user"
  if [ ! -f "$UFIX/expected.json" ] || [ tests/models/gen_user_models.py -nt "$UFIX/expected.json" ]; then
    echo "test: generating user-model fixtures (no metadata, NHWC/sigmoid/softmax heads) into $UFIX"
    rm -rf "$UFIX"
    /usr/bin/python3 tests/models/gen_user_models.py "$UFIX"
  fi
  export MEDQ_USER_FIXTURES="$PWD/$UFIX"
else
  echo "test: PyTorch not importable under /usr/bin/python3: architecture-coverage tests will skip"
fi
export MEDQ_TORCHVISION_FIXTURES="$PWD/$FIX"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j"$(nproc)"
