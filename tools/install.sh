#!/usr/bin/env bash
# Builds the dynconv_mm stack into a virtual environment from the package
# registries alone, and reuses everything already built on a second run.
#
#   bash tools/install.sh            # venv at ./.venv (DYNCONV_MM_VENV overrides)
#
# Why each step is the way it is: docs/install.md (and ../shared/STACK.md).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${DYNCONV_MM_VENV:-$ROOT/.venv}
CACHE=${DYNCONV_MM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dynconv_mm}
PY=${PYTHON:-python3}

TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0
MMCV_SDIST_URL=https://files.pythonhosted.org/packages/a7/19/f97f0fd4d432113a232e75f965335be6b7bb6557ae9faf8051e9a012cadd/mmcv-2.1.0.tar.gz
MMCV_SDIST_SHA256=d387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f
XTCOCOTOOLS_VERSION=1.14.3

log() { printf '[install %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Everything that decides what ends up in the venv; a change to any of it
# re-runs the (idempotent) pip steps, nothing is rebuilt that is cached.
stamp_inputs() {
  cat "$ROOT/tools/install.sh" "$ROOT/requirements/runtime.txt" "$ROOT/requirements/tests.txt" "$ROOT/setup.py"
}
STAMP_WANT=$(stamp_inputs | sha256sum | cut -d' ' -f1)
STAMP_FILE=$VENV/.dynconv_mm_stamp
if [[ -f $STAMP_FILE && $(cat "$STAMP_FILE") == "$STAMP_WANT" ]]; then
  log "environment at $VENV is up to date"
  exit 0
fi

if [[ ! -x $VENV/bin/python ]]; then
  log "creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# torch 2.14 requires setuptools >= 77; mmcv 2.1.0's setup.py and mmengine
# (to resolve `mmdet::` base configs) need pkg_resources, which setuptools 81
# deprecates loudly and 82 removed.
"${PIP[@]}" install -q "setuptools>=77.0.3,<81" wheel ninja

log "torch $TORCH_VERSION / torchvision $TORCHVISION_VERSION"
"${PIP[@]}" install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" "setuptools>=77.0.3,<81"

# --- mmcv with its compiled ops: no wheel on PyPI, built once per torch version.
WHEELS=$CACHE/wheels/torch-$TORCH_VERSION
mkdir -p "$WHEELS"
mmcv_wheel() { ls "$WHEELS"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1; }
if [[ -z $(mmcv_wheel) ]]; then
  log "building mmcv $MMCV_VERSION with ops from source (about 13 min on 2 cores, once)"
  build=$(mktemp -d)
  trap 'rm -rf "$build"' EXIT
  curl -fsSL --retry 3 -o "$build/mmcv.tar.gz" "$MMCV_SDIST_URL"
  echo "$MMCV_SDIST_SHA256  $build/mmcv.tar.gz" | sha256sum -c --quiet -
  tar -xzf "$build/mmcv.tar.gz" -C "$build"
  # torch >= 2.14 headers require C++20; mmcv 2.1.0 hard-codes -std=c++17.
  sed -i 's/-std=c++17/-std=c++20/g' "$build/mmcv-$MMCV_VERSION/setup.py"
  (cd "$build/mmcv-$MMCV_VERSION" && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=$(nproc) \
    "${PIP[@]}" wheel -q --no-deps --no-build-isolation . -w "$build/dist")
  mv "$build"/dist/mmcv-*.whl "$WHEELS"/
fi
"${PIP[@]}" install -q "$(mmcv_wheel)"

# --- xtcocotools: the PyPI wheel is built for numpy 1; build it against ours.
"${PIP[@]}" install -q -r "$ROOT/requirements/runtime.txt"
if [[ -z $(ls "$WHEELS"/xtcocotools-"$XTCOCOTOOLS_VERSION"-*.whl 2>/dev/null) ]]; then
  log "building xtcocotools $XTCOCOTOOLS_VERSION against numpy 2 (once)"
  "${PIP[@]}" wheel -q --no-deps --no-binary xtcocotools "xtcocotools==$XTCOCOTOOLS_VERSION" -w "$WHEELS"
fi
"${PIP[@]}" install -q --no-deps "$WHEELS"/xtcocotools-"$XTCOCOTOOLS_VERSION"-*.whl

# --- mmpose lists chumpy, which no longer builds and is never imported.
"${PIP[@]}" install -q --no-deps "mmpose==1.3.2"

"${PIP[@]}" install -q -r "$ROOT/requirements/tests.txt"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT"

log "checking the stack imports"
"$VENV/bin/python" -c "import mmcv.ops, mmdet.models, mmpose.models, mmpose.visualization, dynconv_mm; print('stack ok:', dynconv_mm.__version__)"
echo "$STAMP_WANT" > "$STAMP_FILE"
log "done: $VENV"
