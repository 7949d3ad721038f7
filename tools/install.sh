#!/usr/bin/env bash
# Builds the dynconv_mm stack into a virtual environment from the package
# registries alone, and reuses everything already built on a second run.
#
#   bash tools/install.sh            # venv at ./.venv
#
# Environment:
#   DYNCONV_MM_VENV       where the venv goes (default: ./.venv)
#   DYNCONV_MM_CACHE      compiled-wheel cache (default: ~/.cache/dynconv_mm)
#   DYNCONV_MM_MMCV_OPS   auto | cpu | cuda: which mmcv ops to compile
#                         (auto: CUDA ops when torch sees a GPU, else CPU)
#   DYNCONV_MM_MMCV_SDIST a local mmcv-2.1.0.tar.gz to build from instead of
#                         downloading it (checked against the same sha256)
#   PYTHON                the Python the venv is made from (default: python3)
#   CXX                   the C++ compiler torch's extension builder uses (c++)
#
# Why each step is the way it is: docs/install.md.
#
# The script only defines functions until its last line, so it can be
# sourced (the tests do) and editing it while it runs cannot change what the
# running copy does.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${DYNCONV_MM_VENV:-$ROOT/.venv}
CACHE=${DYNCONV_MM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dynconv_mm}
PY=${PYTHON:-python3}
OPS_REQUEST=${DYNCONV_MM_MMCV_OPS:-auto}

TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0
MMCV_SDIST_SHA256=d387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f
XTCOCOTOOLS_VERSION=1.14.3
MMPOSE_VERSION=1.3.2

VPY=$VENV/bin/python
PIP=("$VPY" -m pip --disable-pip-version-check)
STAMP_FILE=$VENV/.dynconv_mm_stamp
BUILD_DIRS=()

log() { printf '[install %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[install] error: %s\n' "$*" >&2; exit 1; }
cleanup() { local d; for d in "${BUILD_DIRS[@]+"${BUILD_DIRS[@]}"}"; do rm -rf "$d"; done; }
new_build_dir() {  # VAR NAME: VAR := a scratch directory removed at exit
  local d
  d=$(mktemp -d "${TMPDIR:-/tmp}/dynconv_mm-$2.XXXXXX")
  BUILD_DIRS+=("$d")
  trap cleanup EXIT
  printf -v "$1" '%s' "$d"
}

# --- what decides the venv's contents; a change re-runs the (idempotent)
# pip steps, and nothing cached is rebuilt. The package's own C++ sources
# are among them: a change compiles them again (build_ext below).
stamp_inputs() {
  cat "$ROOT/tools/install.sh" "$ROOT/requirements/runtime.txt" \
    "$ROOT/requirements/tests.txt" "$ROOT/setup.py" \
    "$ROOT"/dynconv_mm/execution/csrc/*
  printf 'DYNCONV_MM_MMCV_OPS=%s\n' "$OPS_REQUEST"
}
stamp_want() { stamp_inputs | sha256sum | cut -d' ' -f1; }

check_ops_request() {
  case $OPS_REQUEST in
    auto | cpu | cuda) ;;
    *) die "DYNCONV_MM_MMCV_OPS='$OPS_REQUEST' is not one of auto, cpu, cuda" ;;
  esac
}

# --- system prerequisites, all checked before anything is downloaded.
python_include_dir() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["include"])'; }

# A C++20 program using what torch 2.14's headers use (<=>, <ranges>,
# concepts); compiling it proves the compiler and its standard library.
CXX20_PROBE='#include <algorithm>
#include <compare>
#include <concepts>
#include <ranges>
#include <span>
template <std::integral T> constexpr auto order(T a, T b) { return a <=> b; }
int main() {
  int v[2] = {1, 2};
  std::span<int> s(v);
  return std::ranges::find(s, 2) == s.end() || order(1, 2) >= 0;
}'

find_nvcc() {  # the nvcc torch's extension builder will use (its own search order)
  local home=${CUDA_HOME:-${CUDA_PATH:-}}
  if [[ -n $home ]]; then
    [[ -x $home/bin/nvcc ]] && printf '%s\n' "$home/bin/nvcc"
    return 0
  fi
  command -v nvcc || { [[ -x /usr/local/cuda/bin/nvcc ]] && echo /usr/local/cuda/bin/nvcc; } || true
}

gpu_visible() {  # before torch is installed: does the driver list a GPU?
  [[ ${CUDA_VISIBLE_DEVICES-unset} != "" ]] && command -v nvidia-smi >/dev/null &&
    nvidia-smi -L 2>/dev/null | grep -q '^GPU '
}

check_prereqs() {
  local missing=() py=$PY ver inc cxx cxx_cmd out scratch tool
  if venv_python_runs; then py=$VPY; fi
  if ! command -v "$py" >/dev/null; then
    missing+=("Python: '$py' not found (set PYTHON to a Python >= 3.10).
      Debian/Ubuntu: sudo apt-get install python3")
  elif ! ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); then
    missing+=("Python: '$py' does not run (set PYTHON to a working Python >= 3.10).")
  else
    if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
      missing+=("Python >= 3.10 (torch $TORCH_VERSION requires it): '$py' is $ver; set PYTHON.")
    fi
    inc=$(python_include_dir "$py")
    if [[ ! -f $inc/Python.h ]]; then
      missing+=("Python headers for $py ($ver): $inc/Python.h is missing (mmcv's and xtcocotools' extensions include it).
      Debian/Ubuntu: sudo apt-get install python$ver-dev")
    fi
    if ! venv_python_runs && ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
      missing+=("the venv module with ensurepip for $py ($ver), to create $VENV.
      Debian/Ubuntu: sudo apt-get install python$ver-venv")
    fi
  fi

  cxx=${CXX:-c++}
  read -ra cxx_cmd <<<"$cxx"  # CXX may carry a launcher or flags, e.g. "ccache g++"
  if [[ ${#cxx_cmd[@]} -eq 0 ]] || ! command -v "${cxx_cmd[0]}" >/dev/null; then
    missing+=("a C++ compiler: '$cxx' (\$CXX, default c++) not found.
      Debian/Ubuntu: sudo apt-get install g++   (g++ >= 10 for C++20)")
  else
    new_build_dir scratch cxx20
    printf '%s\n' "$CXX20_PROBE" >"$scratch/probe.cpp"
    if ! out=$("${cxx_cmd[@]}" -std=c++20 -c "$scratch/probe.cpp" -o "$scratch/probe.o" 2>&1); then
      missing+=("a C++20 compiler: '$cxx' (\$CXX, default c++) cannot compile a C++20 test program with -std=c++20; torch $TORCH_VERSION's headers need it. Its first error: $(grep -m1 -i error <<<"$out" || head -n1 <<<"$out")
      Debian/Ubuntu: sudo apt-get install g++   (g++ >= 10), or point CXX at a newer one, e.g. CXX=g++-12")
    fi
  fi

  for tool in tar sha256sum; do
    command -v "$tool" >/dev/null || missing+=("$tool.
      Debian/Ubuntu: sudo apt-get install ${tool/sha256sum/coreutils}")
  done

  # CUDA ops need nvcc. Decided for sure only once torch is installed
  # (check_cuda_toolkit); a GPU the driver lists already tells us now.
  if [[ $OPS_REQUEST == cuda ]] || { [[ $OPS_REQUEST == auto ]] && gpu_visible; }; then
    if [[ -z $(find_nvcc) ]]; then
      missing+=("the CUDA toolkit (nvcc): mmcv's CUDA ops are built because $(
        [[ $OPS_REQUEST == cuda ]] && echo 'DYNCONV_MM_MMCV_OPS=cuda' || echo 'a GPU is visible (DYNCONV_MM_MMCV_OPS=auto)'
      ), and no nvcc was found (CUDA_HOME, PATH, /usr/local/cuda). Install the toolkit whose major version matches torch's CUDA (torch $TORCH_VERSION from PyPI: CUDA 13) and set CUDA_HOME.
      Debian/Ubuntu: package cuda-toolkit-13-0 from NVIDIA's CUDA apt repository (Debian's own nvidia-cuda-toolkit is older);
      or build CPU-only ops: DYNCONV_MM_MMCV_OPS=cpu bash tools/install.sh")
    fi
  fi

  if ((${#missing[@]})); then
    printf '[install] error: missing system prerequisites (nothing was downloaded or changed):\n' >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
  fi
}

# --- the venv: created if absent; what an interrupted run left half-made is
# repaired: a venv whose python or pip does not run is recreated, and a
# package whose files are missing is removed so that the pip steps below
# install it again.
venv_python_runs() { [[ -x $VPY ]] && "$VPY" -c '' 2>/dev/null; }

# Prints "NAME<TAB>VERSION<TAB>WHAT<TAB>DIST_INFO" for each distribution in
# the venv's own site-packages whose RECORD is missing or names a file that
# is not there: what a killed pip leaves behind, and what pip itself would
# call "already satisfied".
incomplete_dists() {
  "$VPY" - <<'PYEOF'
import importlib.metadata as md
import sysconfig
from pathlib import Path

paths = sorted({sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib']})
for dist in md.distributions(path=paths):
    where = getattr(dist, '_path', '')  # the .dist-info directory
    head = f"{dist.metadata['Name']}\t{dist.version}"
    files = dist.files
    if files is None:
        print(f'{head}\tno RECORD\t{where}')
        continue
    for f in files:
        if f.suffix != '.pyc' and not Path(dist.locate_file(f)).exists():
            print(f'{head}\tmissing {f}\t{where}')
            break
PYEOF
}

venv_problem() {  # what makes the venv unusable as a whole; empty if nothing
  local out
  if ! venv_python_runs; then echo "its python ($VPY) is missing or does not run"; return; fi
  if ! "$VPY" -c 'import pip' 2>/dev/null; then echo "it has no working pip"; return; fi
  if ! out=$(incomplete_dists 2>&1); then echo "its packages cannot be listed: $(tail -n1 <<<"$out")"; return; fi
  if grep -q $'^pip\t' <<<"$out"; then echo "its pip is half-installed"; fi
}

remove_incomplete_dists() {
  local name version what where
  while IFS=$'\t' read -r name version what where; do
    log "removing half-installed $name $version ($what); the steps below install it again"
    # pip removes the files that are there; without a RECORD it refuses,
    # and dropping the .dist-info is enough for pip to install it afresh.
    "${PIP[@]}" uninstall -y -q "$name" >/dev/null 2>&1 || true
    [[ -n $where && -d $where ]] && rm -rf "$where"
  done < <(incomplete_dists)
}

looks_like_venv() {  # only such a directory is ever deleted
  local entry
  [[ -f $1/pyvenv.cfg ]] && return 0
  for entry in "$1"/* "$1"/.[!.]*; do
    [[ -e $entry || -L $entry ]] || continue
    case ${entry##*/} in bin | include | lib | lib64) ;; *) return 1 ;; esac
  done
}

ensure_venv() {
  local problem trash
  rm -rf "$VENV".removing.*  # set aside by a run killed while deleting it
  if [[ -e $VENV ]]; then
    problem=$(venv_problem)
    if [[ -z $problem ]]; then
      remove_incomplete_dists
      return 0
    fi
    looks_like_venv "$VENV" ||
      die "$VENV exists but is not a virtual environment ($problem); move it away or set DYNCONV_MM_VENV"
    log "recreating $VENV, left half-made by an earlier run: $problem"
    # Moved aside first: deleting gigabytes takes minutes, and a run killed
    # meanwhile must not leave a half-deleted venv under the venv's name.
    trash=$(mktemp -d "$VENV.removing.XXXXXX")
    mv "$VENV" "$trash/"
    rm -rf "$trash"
  else
    log "creating virtual environment $VENV"
  fi
  "$PY" -m venv "$VENV"
}

# --- the wheel cache. Wheels appear under their final name only when
# complete (written under a temporary name in the same directory, then
# renamed); a corrupt one (e.g. left by an older script) is removed and rebuilt.
wheel_ok() { "$VPY" -c 'import sys, zipfile; sys.exit(zipfile.ZipFile(sys.argv[1]).testzip() is not None)' "$1" 2>/dev/null; }

cached_wheel() {  # DIR GLOB -> the path of a complete wheel, or nothing
  local dir=$1 pattern=$2 f
  [[ -d $dir ]] || return 0
  find "$dir" -maxdepth 1 -name '.partial.*' -mmin +60 -delete 2>/dev/null || true
  for f in "$dir"/$pattern; do
    [[ -f $f ]] || continue
    if wheel_ok "$f"; then printf '%s\n' "$f"; return 0; fi
    log "removing corrupt cached wheel $f (an interrupted run?); it is rebuilt"
    rm -f "$f"
  done
}

publish_wheel() {  # SRC DIR: put SRC into DIR atomically
  local src=$1 dir=$2 tmp
  mkdir -p "$dir"
  tmp=$(mktemp "$dir/.partial.XXXXXX")
  if ! cp "$src" "$tmp" || ! mv -f "$tmp" "$dir/${src##*/}"; then
    rm -f "$tmp"
    die "could not write ${src##*/} into the wheel cache $dir"
  fi
}

# Prints "ABI KEY TORCH_CUDA ARCHS": the Python ABI (cp311); the mmcv
# wheel's cache key, e.g. cp311-torch2.14.1+cu130-ops_cpu or
# cp311-torch2.14.1+cu130-ops_cuda-sm90, which names everything the compiled
# ops depend on (interpreter ABI, exact torch build, which ops and for which
# GPU architectures); torch's CUDA version; the TORCH_CUDA_ARCH_LIST to build
# with. "-" stands for none.
probe_build() {  # PYTHON OPS_REQUEST
  "$1" - "$2" <<'PYEOF'
import os
import re
import sys
import sysconfig

import torch

request = sys.argv[1]
impl = {'cpython': 'cp', 'pypy': 'pp'}.get(sys.implementation.name, sys.implementation.name)
abi = f'{impl}{sys.version_info.major}{sys.version_info.minor}'
if sysconfig.get_config_var('Py_GIL_DISABLED'):
    abi += 't'
base = torch.__version__.split('+')[0]
if torch.version.cuda:
    build = 'cu' + torch.version.cuda.replace('.', '')
elif getattr(torch.version, 'hip', None):
    build = 'rocm' + torch.version.hip.split('-')[0]
else:
    build = 'cpu'
ops, archs = request, '-'
if request == 'auto':
    ops = 'cuda' if torch.cuda.is_available() else 'cpu'
if ops == 'cuda':
    if not torch.version.cuda:
        sys.exit(f'DYNCONV_MM_MMCV_OPS=cuda, but torch {torch.__version__} is not a CUDA build')
    archs = os.environ.get('TORCH_CUDA_ARCH_LIST', '').strip()
    if not archs:
        caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
        archs = ';'.join('%d.%d' % c for c in sorted(caps))
    if not archs:
        sys.exit('DYNCONV_MM_MMCV_OPS=cuda, but torch sees no GPU: set TORCH_CUDA_ARCH_LIST '
                 '(e.g. "9.0") to name the GPUs to build for')
    archs = ';'.join(a for a in re.split('[ ;]+', archs) if a)
    ops += '-' + '_'.join('sm' + re.sub('[^0-9a-z]', '', a.lower()) for a in archs.split(';'))
print(abi, f'{abi}-torch{base}+{build}-ops_{ops}', torch.version.cuda or '-', archs)
PYEOF
}

check_cuda_toolkit() {  # TORCH_CUDA: nvcc present and of torch's major version
  local torch_cuda=$1 nvcc nvcc_ver
  nvcc=$(find_nvcc)
  [[ -n $nvcc ]] || die "mmcv's CUDA ops are to be built but no nvcc was found (CUDA_HOME, PATH, /usr/local/cuda): install the CUDA $torch_cuda toolkit and set CUDA_HOME, or set DYNCONV_MM_MMCV_OPS=cpu"
  nvcc_ver=$("$nvcc" --version | sed -n 's/.*release \([0-9][0-9.]*\).*/\1/p')
  [[ ${nvcc_ver%%.*} == "${torch_cuda%%.*}" ]] ||
    die "$nvcc is CUDA $nvcc_ver but torch $TORCH_VERSION is built for CUDA $torch_cuda; torch refuses to build extensions across CUDA major versions: point CUDA_HOME at a CUDA ${torch_cuda%%.*} toolkit, or set DYNCONV_MM_MMCV_OPS=cpu"
}

# The sdist comes through pip, so the index configured for pip (a mirror,
# a proxy) is the one used; its sha256 is pinned all the same.
fetch_mmcv_sdist() {  # DEST_DIR -> path of the verified sdist
  local dest=$1 files origin
  if [[ -n ${DYNCONV_MM_MMCV_SDIST:-} ]]; then  # offline: a copy at hand
    origin="copied from DYNCONV_MM_MMCV_SDIST=$DYNCONV_MM_MMCV_SDIST"
    [[ -f $DYNCONV_MM_MMCV_SDIST ]] || die "DYNCONV_MM_MMCV_SDIST=$DYNCONV_MM_MMCV_SDIST is not a file"
    cp "$DYNCONV_MM_MMCV_SDIST" "$dest/mmcv-$MMCV_VERSION.tar.gz"
  else
    origin="that pip downloaded; check the index pip is configured with (pip config list)"
    # pip prepares the sdist's metadata, i.e. runs its setup.py, which needs
    # pkg_resources and torch: hence the venv's pip without build isolation.
    # Hiding GPUs keeps that setup.py on its CPU path (its CUDA path would
    # demand CUDA_HOME just to print metadata).
    (cd "$dest" && env -u FORCE_CUDA CUDA_VISIBLE_DEVICES= MMCV_WITH_OPS=1 \
      "${PIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation \
      "mmcv==$MMCV_VERSION" -d "$dest" >&2) || die "pip could not download the mmcv $MMCV_VERSION sdist"
  fi
  files=("$dest"/mmcv-"$MMCV_VERSION".tar.gz)
  [[ -f ${files[0]} ]] || die "pip download left no mmcv-$MMCV_VERSION.tar.gz in $dest"
  echo "$MMCV_SDIST_SHA256  ${files[0]}" | sha256sum -c --quiet - >/dev/null 2>&1 ||
    die "the mmcv-$MMCV_VERSION.tar.gz $origin has sha256 $(sha256sum "${files[0]}" | cut -d' ' -f1), not the pinned $MMCV_SDIST_SHA256"
  printf '%s\n' "${files[0]}"
}

build_mmcv() {  # OPS(cpu|cuda) TORCH_CUDA ARCHS KEY_DIR
  local ops=$1 torch_cuda=$2 archs=$3 dir=$4 build sdist src
  new_build_dir build mmcv
  mkdir -p "$build/sdist"
  sdist=$(fetch_mmcv_sdist "$build/sdist")
  tar -xzf "$sdist" -C "$build"
  src=$build/mmcv-$MMCV_VERSION
  # torch >= 2.14 headers require C++20; mmcv 2.1.0 hard-codes -std=c++17
  # (for both the C++ compiler and nvcc).
  sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
  grep -q -- '-std=c++20' "$src/setup.py" || die "mmcv $MMCV_VERSION's setup.py no longer names -std=c++17; update tools/install.sh"
  # mmcv 2.1.0's setup.py builds CUDA ops whenever torch.cuda.is_available()
  # or FORCE_CUDA=1 (FORCE_CUDA=0 changes nothing), so each variant is
  # forced: CPU by hiding every GPU, CUDA by FORCE_CUDA=1 and an explicit
  # architecture list (the one in the cache key).
  if [[ $ops == cpu ]]; then
    log "building mmcv $MMCV_VERSION with its CPU ops from source (about 13 min on 2 cores, once per cache key)"
    (cd "$src" && env -u FORCE_CUDA CUDA_VISIBLE_DEVICES= MMCV_WITH_OPS=1 MAX_JOBS=$(nproc) \
      "${PIP[@]}" wheel -q --no-deps --no-build-isolation . -w "$build/dist")
  else
    log "building mmcv $MMCV_VERSION with its CPU and CUDA ops from source for CUDA architectures $archs (long: the CUDA kernels dominate; once per cache key)"
    (cd "$src" && FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$archs MMCV_WITH_OPS=1 MAX_JOBS=$(nproc) \
      CUDA_HOME=$(dirname "$(dirname "$(find_nvcc)")") \
      "${PIP[@]}" wheel -q --no-deps --no-build-isolation . -w "$build/dist")
  fi
  publish_wheel "$(ls "$build"/dist/mmcv-"$MMCV_VERSION"-*.whl)" "$dir"
}

install_stack() {
  local probe abi key torch_cuda archs ops mmcv_whl xtco_dir xtco_whl build
  # torch 2.14 requires setuptools >= 77; mmcv 2.1.0's setup.py and mmengine
  # (to resolve `mmdet::` base configs) need pkg_resources, which setuptools
  # 81 deprecates loudly and 82 removed.
  "${PIP[@]}" install -q "setuptools>=77.0.3,<81" wheel ninja

  log "torch $TORCH_VERSION / torchvision $TORCHVISION_VERSION"
  "${PIP[@]}" install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" "setuptools>=77.0.3,<81"

  # --- mmcv with its compiled ops: no wheel on PyPI; built once per key.
  probe=$(probe_build "$VPY" "$OPS_REQUEST" 2>/dev/null) || die "$(probe_build "$VPY" "$OPS_REQUEST" 2>&1 | tail -n1)"
  read -r abi key torch_cuda archs <<<"$probe"
  ops=${key##*-ops_}
  ops=${ops%%-*}
  mmcv_whl=$(cached_wheel "$CACHE/wheels/$key" "mmcv-$MMCV_VERSION-*.whl")
  if [[ -z $mmcv_whl ]]; then
    # Checked before the download: nvcc present and of torch's CUDA major.
    [[ $ops == cuda ]] && check_cuda_toolkit "$torch_cuda"
    build_mmcv "$ops" "$torch_cuda" "$archs" "$CACHE/wheels/$key"
    mmcv_whl=$(cached_wheel "$CACHE/wheels/$key" "mmcv-$MMCV_VERSION-*.whl")
  else
    log "mmcv $MMCV_VERSION: cached wheel for $key"
  fi
  "${PIP[@]}" install -q "$mmcv_whl"

  # --- xtcocotools: the PyPI wheel is built for numpy 1; built from source
  # (against numpy 2, which also runs under numpy 1). Depends on the ABI only.
  "${PIP[@]}" install -q -r "$ROOT/requirements/runtime.txt"
  xtco_dir=$CACHE/wheels/$abi
  xtco_whl=$(cached_wheel "$xtco_dir" "xtcocotools-$XTCOCOTOOLS_VERSION-*.whl")
  if [[ -z $xtco_whl ]]; then
    log "building xtcocotools $XTCOCOTOOLS_VERSION against numpy 2 (once per Python ABI)"
    new_build_dir build xtcocotools
    "${PIP[@]}" wheel -q --no-deps --no-binary xtcocotools "xtcocotools==$XTCOCOTOOLS_VERSION" -w "$build"
    publish_wheel "$(ls "$build"/xtcocotools-"$XTCOCOTOOLS_VERSION"-*.whl)" "$xtco_dir"
    xtco_whl=$(cached_wheel "$xtco_dir" "xtcocotools-$XTCOCOTOOLS_VERSION-*.whl")
  fi
  "${PIP[@]}" install -q --no-deps "$xtco_whl"

  # --- mmpose lists chumpy, which no longer builds and is never imported.
  "${PIP[@]}" install -q --no-deps "mmpose==$MMPOSE_VERSION"

  "${PIP[@]}" install -q -r "$ROOT/requirements/tests.txt"
  "${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT"
  # The package's CPU ops (dynconv_mm/execution/csrc), compiled next to
  # their sources against the venv's torch: the editable install of
  # setuptools 80 leaves extensions out. setup.py would install without
  # them if they failed to compile; here that is an error.
  log "compiling dynconv_mm's CPU ops"
  (cd "$ROOT" && DYNCONV_MM_REQUIRE_CPU_OPS=1 "$VPY" setup.py -q build_ext --inplace >&2)
  "$VPY" -c "import dynconv_mm._cpu_ops"
}

main() {
  local want
  check_ops_request
  want=$(stamp_want)
  if [[ -f $STAMP_FILE && $(cat "$STAMP_FILE") == "$want" ]] && venv_python_runs; then
    log "environment at $VENV is up to date"
    return 0
  fi
  check_prereqs
  ensure_venv
  rm -f "$STAMP_FILE"  # written again only once everything below succeeded
  install_stack
  log "checking the stack imports"
  "$VPY" -c "import mmcv.ops, mmdet.models, mmpose.models, mmpose.visualization, dynconv_mm; print('stack ok:', dynconv_mm.__version__)"
  printf '%s\n' "$want" >"$STAMP_FILE.tmp" && mv -f "$STAMP_FILE.tmp" "$STAMP_FILE"
  log "done: $VENV"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; exit $?; fi
