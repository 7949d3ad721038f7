#!/usr/bin/env bash
# The compiled CPU ops on aarch64, from an x86-64 Debian 12 machine: builds
# dynconv_mm/execution/csrc with the aarch64 cross compiler against PyPI's
# aarch64 torch, then runs the execution floor's tests in Debian's arm64
# Python under user-mode emulation (qemu-aarch64).
#
#   sudo bash tools/check_aarch64.sh [WORK]    # WORK: /tmp/dynconv_mm-aarch64
#
# Needs root (apt: qemu-user, g++-aarch64-linux-gnu, Debian's arm64
# packages) and the package registries; about 700 MB in WORK, a few minutes
# (the tests about 5 under emulation on 2 cores). Only the tests that
# import nothing of OpenMMLab and start no process run: the package's
# layers need mmcv, which has no aarch64 wheel. torch on aarch64 reports no
# AVX, so the AVX-only ops are not offered there and their tests skip; what
# runs is the attention op, the unfold / fold and every formulation
# against the oracle, in the ops' portable loops.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${1:-/tmp/dynconv_mm-aarch64}
TORCH_VERSION=${DYNCONV_MM_AARCH64_TORCH:-2.9.1}  # PyPI's aarch64 CPU build
HOST_PY=${DYNCONV_MM_HOST_PYTHON:-python3}
TESTS=(test_dynamic_conv2d test_random_shapes test_cpu_unfold
       test_cpu_attention_op test_global_average_pool test_cpu_sample_kernel
       test_cpu_sample_kernels test_cpu_sample_conv test_kernel_recompute
       test_tiled_gemm)
# Debian 12's arm64 Python 3.11 and what it loads
DEBS=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib
      libpython3.11-dev libc6 libgcc-s1 libstdc++6 libgomp1 zlib1g libexpat1
      libffi8 libssl3 libbz2-1.0 liblzma5 libsqlite3-0 libuuid1 libncursesw6
      libtinfo6 libreadline8 libdb5.3 libcrypt1 libnsl2 libtirpc3
      libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2
      libkeyutils1)

log() { printf '[check_aarch64 %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

log "cross compiler and qemu"
export DEBIAN_FRONTEND=noninteractive
dpkg --add-architecture arm64
apt-get update -qq
apt-get install -y -qq qemu-user g++-aarch64-linux-gnu >/dev/null

mkdir -p "$WORK"/{debs,sysroot,wheels,site,objects}
log "arm64 Python into $WORK/sysroot"
(cd "$WORK/debs" && apt-get download -qq "${DEBS[@]/%/:arm64}" media-types)
for deb in "$WORK"/debs/*.deb; do dpkg -x "$deb" "$WORK/sysroot"; done

log "torch $TORCH_VERSION for aarch64 and the tests' packages"
"$HOST_PY" -m pip download -q --no-deps --only-binary=:all: \
  --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 \
  --platform manylinux2014_aarch64 --python-version 3.11 \
  --implementation cp -d "$WORK/wheels" "torch==$TORCH_VERSION" numpy \
  markupsafe
"$HOST_PY" -m pip download -q --no-deps -d "$WORK/wheels" typing_extensions \
  sympy mpmath networkx jinja2 filelock fsspec pytest iniconfig pluggy \
  packaging pygments
for wheel in "$WORK"/wheels/*.whl; do
  "$HOST_PY" -m zipfile -e "$wheel" "$WORK/site"
done

log "compiling the ops for aarch64 (as setup.py does: -O3 -fopenmp, C++20)"
site=$WORK/site sysroot=$WORK/sysroot
includes=(-I"$site/torch/include" -I"$site/torch/include/torch/csrc/api/include"
          -I"$sysroot/usr/include/python3.11" -I"$sysroot/usr/include")
for source in "$ROOT"/dynconv_mm/execution/csrc/*.cpp; do
  aarch64-linux-gnu-g++ -std=c++20 -O3 -fopenmp -fPIC -Wall \
    -DTORCH_EXTENSION_NAME=_cpu_ops -DTORCH_API_INCLUDE_EXTENSION_H \
    "${includes[@]}" -c "$source" \
    -o "$WORK/objects/$(basename "$source" .cpp).o" 2>&1 |
    { grep -v '/torch/include/' || true; } >&2
done

log "the execution floor with the ops, and its tests"
pkg=$WORK/pkg
rm -rf "$pkg" && mkdir -p "$pkg/dynconv_mm" "$pkg/tests"
aarch64-linux-gnu-g++ -shared -fopenmp "$WORK"/objects/*.o \
  -o "$pkg/dynconv_mm/_cpu_ops.so" -L"$site/torch/lib" -lc10 -ltorch \
  -ltorch_cpu -ltorch_python
# the package's own __init__ imports its OpenMMLab floors; the execution
# floor imports none
: > "$pkg/dynconv_mm/__init__.py"
cp -r "$ROOT/dynconv_mm/execution" "$pkg/dynconv_mm/"
rm -rf "$pkg/dynconv_mm/execution/csrc" "$pkg/dynconv_mm/execution/__pycache__"
cp "$ROOT"/tests/{oracle,cpu_ops_spy}.py \
  "$ROOT/tests/test_execution/float32_layer_check.py" "$pkg/tests/"
for name in "${TESTS[@]}"; do
  cp "$ROOT/tests/test_execution/$name.py" "$pkg/tests/"
done
# what importing dynconv_mm does for the execution floor
echo 'import dynconv_mm.execution as e; e.keep_freed_cpu_memory()' \
  > "$pkg/tests/keep_freed_memory.py"
printf '[pytest]\npythonpath = tests\naddopts = -ra\n' > "$pkg/pytest.ini"

emulated() {
  qemu-aarch64 -L "$sysroot" -E PYTHONPATH="$site:$pkg" \
    -E PYTHONDONTWRITEBYTECODE=1 -E LD_LIBRARY_PATH="$site/torch/lib" \
    "$sysroot/usr/bin/python3.11" "$@"
}
cd "$pkg"
emulated -c 'import platform, torch, dynconv_mm.execution.cpu_ops as c
print(platform.machine(), "torch", torch.__version__,
      torch.backends.cpu.get_cpu_capability(), "ops:", c.cpu_ops_available(),
      c.CPU_OPS_ERROR or "")' 2>&1 | grep -v MIDR_EL1
emulated -m pytest -q -p no:cacheprovider -p keep_freed_memory tests 2>&1 |
  grep -v MIDR_EL1
