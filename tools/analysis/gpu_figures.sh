#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md and the test suite on a GPU machine,
# including one that has PyTorch but no network (a cluster's compute node):
#
#   # on a machine with the package index, for the GPU machine's Python:
#   bash tools/analysis/gpu_figures.sh wheelhouse DIR [PYTHON_VERSION]
#   # on the GPU machine (DIR copied there), no network needed:
#   bash tools/analysis/gpu_figures.sh install DIR
#   bash tools/analysis/gpu_figures.sh run OUT_DIR [STEP ...]
#
# `wheelhouse` downloads the OpenMMLab stack (mmengine, mmdet, mmpose and the
# dependencies a PyTorch image lacks, as wheels for PYTHON_VERSION, default
# 3.12, on manylinux x86_64) and the mmcv and xtcocotools sources. It needs
# this repository's venv (tools/install.sh), whose pip and torch read the
# mmcv sdist's metadata.
#
# `install` installs them on top of the GPU machine's own torch into
# DYNCONV_MM_SITE (default /tmp/dynconv_mm_site), without touching that
# Python's site-packages, and builds mmcv's CPU ops against that torch (about
# 2 minutes on 16 cores; the figures need no mmcv CUDA op). Each later
# command finds it through `run`, or through
#   export PYTHONPATH=$DYNCONV_MM_SITE:<repository root>
#
# `run` writes each step's log (STEP.log) and results into OUT_DIR and goes
# on past a failed step; its exit status is 1 if any step failed. Steps, in
# the default order:
#   env       the GPU, driver, torch, triton and stack versions
#   gpu-tests the tests that need a GPU (triton kernels and layers compiled
#             by Inductor for the GPU, against the oracle)
#   network   benchmark.py --device cuda --figures network: OD-ResNet-50
#             1x/4x and DY-ResNet-50 training img/s, peak memory, batch-1
#             latency (bf16 autocast, batch 64, 224x224)
#   triton    the same with every dynamic layer forced to execution=triton
#   layers    benchmark.py --device cuda --figures layer, and
#             benchmark_layers.py --amp bf16 --batch 64 (per formulation)
#   suite     the whole test suite (pytest, as tools/run_tests.sh runs it)
#   compiled  benchmark.py --device cuda --figures network --compile: the
#             network figures plus both networks through torch.compile
#             (Inductor's Triton code), training and batch-1 inference
#   captured  the same with --compile-mode reduce-overhead: CUDA graphs,
#             for the launch-bound batch-1 latency
#   profile   profile_layer.py (bf16, batch 64, training) on three layers:
#             each op's device time and launches against a static conv's,
#             and each step's wall time and dispatched ops (host-bound or not)
#
# suite, compiled, captured and profile run only when named (minutes of
# compilation each for the first three).
#
# Environment: PYTHON (default python3), DYNCONV_MM_SITE, DYNCONV_MM_QUICK=1
# (benchmark.py --quick: fewer rounds and processes; compiled and captured in
# one process, since each process compiles anew), DYNCONV_MM_NETWORKS (a
# comma list for benchmark.py --networks in the network, triton, compiled and
# captured steps, e.g. "OD-ResNet-50 1x"), DYNCONV_MM_STEP_TIMEOUT (seconds: a
# step running longer is stopped and counted as failed, for a GPU lease of
# fixed length).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PYTHON=${PYTHON:-python3}
SITE=${DYNCONV_MM_SITE:-/tmp/dynconv_mm_site}
DEFAULT_STEPS=(env gpu-tests network triton layers)

# What a PyTorch GPU image (torch, torchvision, triton, numpy, scipy,
# matplotlib, opencv, pyyaml, rich, pytest) lacks of our runtime, pinned as
# requirements/runtime.txt and tools/install.sh pin them.
WHEELS=(mmengine==0.10.7 mmdet==3.3.0 mmpose==1.3.2 addict==2.4.0
  yapf==0.43.0 platformdirs==4.14.8 termcolor==3.3.0 terminaltables==3.1.10
  shapely==2.2.0 pycocotools==2.0.11 json-tricks==3.17.3 munkres==3.0.0
  'setuptools>=77.0.3,<81')
XTCOCOTOOLS=xtcocotools==1.14.3

log() { printf '[gpu_figures %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[gpu_figures] error: %s\n' "$*" >&2; exit 1; }

use_site() { export PYTHONPATH=$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}; }

wheelhouse() {  # DIR [PYTHON_VERSION]
  local dir=${1:?usage: gpu_figures.sh wheelhouse DIR [PYTHON_VERSION]}
  local version=${2:-3.12} abi
  abi=cp${version/./}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  # shellcheck source=../install.sh
  source "$ROOT/tools/install.sh"
  venv_python_runs || die "no venv at $VENV: run bash tools/install.sh first"
  log "wheels for Python $version (manylinux x86_64) into $dir"
  "${PIP[@]}" download -q --no-deps --only-binary=:all: \
    --python-version "$version" --implementation cp --abi "$abi" --abi abi3 \
    --abi none --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$dir" "${WHEELS[@]}"
  log "the xtcocotools and mmcv sources"
  "${PIP[@]}" download -q --no-deps --no-binary :all: "$XTCOCOTOOLS" -d "$dir"
  fetch_mmcv_sdist "$dir" >/dev/null
  log "done: $(find "$dir" -maxdepth 1 -type f | wc -l) files, $(du -sh "$dir" | cut -f1)"
}

install() {  # DIR
  local dir=${1:?usage: gpu_figures.sh install DIR} build sdist include
  [[ -d $dir ]] || die "no wheelhouse at $dir (make one with: gpu_figures.sh wheelhouse DIR)"
  dir=$(cd "$dir" && pwd)
  "$PYTHON" -c 'import torch' 2>/dev/null ||
    die "$PYTHON cannot import torch; set PYTHON to the Python that has it"
  include=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  [[ -f $include/Python.h ]] ||
    die "$include/Python.h is missing: mmcv's and xtcocotools' extensions need the Python headers"
  log "installing the wheels of $dir into $SITE"
  mkdir -p "$SITE"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade \
    --target "$SITE" "$dir"/*.whl
  use_site
  build=$(mktemp -d "${TMPDIR:-/tmp}/dynconv_mm-gpu.XXXXXX")
  if ! "$PYTHON" -c 'import mmcv.ops' 2>/dev/null; then
    # install.sh's own build (C++20 flag, CPU ops with every GPU hidden),
    # from the sdist at hand, with this Python and its torch
    sdist=("$dir"/mmcv-*.tar.gz)
    (
      # shellcheck source=../install.sh
      source "$ROOT/tools/install.sh"
      VPY=$PYTHON
      PIP=("$PYTHON" -m pip --disable-pip-version-check)
      export DYNCONV_MM_MMCV_SDIST=${sdist[0]}
      build_mmcv cpu - - "$build/mmcv"
    )
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade \
      --target "$SITE" "$build"/mmcv/mmcv-*.whl
  fi
  if ! "$PYTHON" -c 'import xtcocotools' 2>/dev/null; then
    log "building xtcocotools against this numpy"
    "$PYTHON" -m pip wheel -q --no-index --no-deps --no-build-isolation \
      "$dir"/xtcocotools-*.tar.gz -w "$build/xtcocotools"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade \
      --target "$SITE" "$build"/xtcocotools/xtcocotools-*.whl
  fi
  rm -rf "$build"
  "$PYTHON" -c "import mmcv.ops, mmdet.models, mmpose.models, dynconv_mm; print('stack ok:', dynconv_mm.__version__)"
  log "done: export PYTHONPATH=$SITE:$ROOT"
}

step() {  # NAME OUT: one step, its output in OUT/NAME.log
  local name=$1 out=$2 benchmark=("$PYTHON" tools/analysis/benchmark.py)
  local quick=() compile_quick=() networks=()
  if [[ ${DYNCONV_MM_QUICK:-0} == 1 ]]; then
    quick=(--quick)
    compile_quick=(--quick --processes 1)
  fi
  [[ -n ${DYNCONV_MM_NETWORKS:-} ]] && networks=(--networks "$DYNCONV_MM_NETWORKS")
  case $name in
    env)
      nvidia-smi || true
      "$PYTHON" - <<'PYEOF'
import torch
print('torch', torch.__version__, 'cuda', torch.version.cuda)
print('device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
import triton
print('triton', triton.__version__)
import mmcv, mmdet, mmengine, dynconv_mm
print('mmcv', mmcv.__version__, 'mmengine', mmengine.__version__, 'mmdet', mmdet.__version__, 'dynconv_mm', dynconv_mm.__version__)
PYEOF
      ;;
    gpu-tests)
      "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_execution/test_triton_conv2d.py \
        tests/test_execution/test_triton_compiles.py tests/test_layers/test_mixed_precision.py \
        tests/test_execution/test_torch_compile.py::test_inductor_compiled_layer_on_gpu_matches_oracle
      ;;
    network)
      "${benchmark[@]}" --device cuda --figures network "${quick[@]}" "${networks[@]}" \
        --out "$out/network"
      ;;
    triton)
      "${benchmark[@]}" --device cuda --figures network --execution triton "${quick[@]}" \
        "${networks[@]}" --out "$out/triton"
      ;;
    layers)
      "${benchmark[@]}" --device cuda --figures layer "${quick[@]}" --out "$out/layer" &&
        "$PYTHON" tools/analysis/benchmark_layers.py --device cuda --amp bf16 --batch 64
      ;;
    compiled)
      "${benchmark[@]}" --device cuda --figures network --compile "${compile_quick[@]}" \
        "${networks[@]}" --out "$out/compiled"
      ;;
    profile)
      local case layer shape execution
      for case in 'ODConv 1x|256,64,1,56|auto' 'ODConv 4x|512,512,3,7|triton' \
        'DynamicConv K=4|64,64,3,56|auto'; do
        IFS='|' read -r layer shape execution <<<"$case"
        "$PYTHON" tools/analysis/profile_layer.py --device cuda --amp bf16 \
          --batch 64 --layer "$layer" --shape "$shape" \
          --execution "$execution" || return 1
      done
      ;;
    captured)
      "${benchmark[@]}" --device cuda --figures network --compile \
        --compile-mode reduce-overhead "${compile_quick[@]}" "${networks[@]}" \
        --out "$out/captured"
      ;;
    # pytest itself: tools/run_tests.sh would first build the venv, which
    # needs the package index
    suite) "$PYTHON" -m pytest -q -p no:cacheprovider ;;
    *) die "unknown step '$name' (steps: ${DEFAULT_STEPS[*]} suite compiled captured profile)" ;;
  esac
}

run() {  # OUT [STEP ...]
  local out=${1:?usage: gpu_figures.sh run OUT_DIR [STEP ...]} name failed=()
  shift
  local steps=("$@")
  ((${#steps[@]})) || steps=("${DEFAULT_STEPS[@]}")
  [[ -z ${DYNCONV_MM_STEP_TIMEOUT:-} || $DYNCONV_MM_STEP_TIMEOUT =~ ^[1-9][0-9]*$ ]] ||
    die "DYNCONV_MM_STEP_TIMEOUT must be a whole number of seconds, got '$DYNCONV_MM_STEP_TIMEOUT'"
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  [[ -d $SITE ]] && use_site
  export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
  "$PYTHON" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' ||
    die "$PYTHON's torch sees no CUDA device: these figures need a GPU"
  cd "$ROOT"
  local limit=${DYNCONV_MM_STEP_TIMEOUT:-} runner=(step)
  if [[ -n $limit ]]; then
    # a step that overruns is stopped and counted as failed, so that a
    # lease of fixed length still reaches the later steps
    runner=(timeout -k 10 "$limit" bash "${BASH_SOURCE[0]}" step)
  fi
  for name in "${steps[@]}"; do
    log "step $name (log: $out/$name.log)"
    if ! "${runner[@]}" "$name" "$out" 2>&1 | tee "$out/$name.log"; then
      failed+=("$name")
      log "step $name FAILED or ran past DYNCONV_MM_STEP_TIMEOUT; going on"
    fi
  done
  if ((${#failed[@]})); then
    log "failed steps: ${failed[*]}"
    return 1
  fi
  log "all steps passed: $out"
}

case ${1:-} in
  wheelhouse | install | run) "$@" ;;
  step)  # one step, as run starts it under DYNCONV_MM_STEP_TIMEOUT
    shift
    cd "$ROOT"
    step "$@" ;;
  *) # the header comment, whole
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' \
      "${BASH_SOURCE[0]}"
    exit 2 ;;
esac
