#!/usr/bin/env bash
# Installs medq's build and test dependencies from Debian 12's archive (run as root).
#   build:  compiler, CMake, Ninja, ONNX (protobuf, checker, shape inference), oneDNN 2.6
#           (+ OpenCL headers/loader: Debian's dnnl-config.cmake requires them, oneDNN is built with its OpenCL GPU runtime),
#           nlohmann-json, libpng, libjpeg-turbo, DCMTK, cpp-httplib (+OpenSSL for optional TLS)
#   test:   googletest, google-benchmark, the ONNX backend conformance data, headless Chromium
#           (renders the validation report), curl (serve load script), and Python
#           PyTorch/torchvision/ONNX/scikit-learn used only to generate fixtures and cross-check
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
PKGS=(build-essential cmake ninja-build pkg-config
      libonnx-dev libprotobuf-dev protobuf-compiler libdnnl-dev ocl-icd-opencl-dev nlohmann-json3-dev
      libpng-dev libjpeg-dev libdcmtk-dev
      libcpp-httplib-dev libssl-dev zlib1g-dev libbrotli-dev curl
      libgtest-dev libbenchmark-dev libonnx-testdata chromium)
PY_PKGS=(python3-torch python3-torchvision python3-onnx python3-numpy python3-sklearn
         python3-fastapi python3-uvicorn python3-multipart python3-pil)
missing=()
for p in "${PKGS[@]}" ${MEDQ_NO_PYTHON:+} ${MEDQ_NO_PYTHON:-"${PY_PKGS[@]}"}; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
