#!/usr/bin/env bash
# tools/dev.sh: everything a fresh Debian 12 machine needs, then one job.
#
#   bash tools/dev.sh quickstart   install deps, build, synthetic data -> csv2h5 -> train -> metrics
#   bash tools/dev.sh test         install deps, build, run the whole test suite (what CI runs)
#   bash tools/dev.sh build        install deps and build only
#   bash tools/dev.sh sanitize     unit tests under AddressSanitizer + UBSan (build-asan/),
#                                  sampler tests under ThreadSanitizer (build-tsan/)
#   bash tools/dev.sh fuzz [SECS]  libFuzzer on the csv2h5 readers (tools/fuzz.sh; needs clang)
#   bash tools/dev.sh cuda-test    the CUDA + NCCL build (build-cuda/) against PyTorch 2.11's libtorch,
#                                  warnings as errors, and its whole test suite on the CPU (gpu tests
#                                  skip without a device); needs the CUDA 13 toolkit (nvcc)
#   bash tools/dev.sh cuda-deps    only fetch and unpack that libtorch into .cuda/ (cached wheels)
#
# Idempotent: packages already installed are not touched, and the build
# folder (build/, or $SASREC_BUILD_DIR) is reused.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${SASREC_BUILD_DIR:-$ROOT/build}
PACKAGES=(cmake ninja-build g++ pkg-config
          libtorch-dev libopenblas0-openmp libblas-dev
          libopenmpi-dev openmpi-bin
          libhdf5-dev libyaml-cpp-dev libgtest-dev libcli11-dev nlohmann-json3-dev
          gnuplot-nox jq ccache python3-torch python3-numpy)

# deps [PACKAGE...]: the given Debian packages (default: PACKAGES) that are missing.
deps() {
  local wanted=("$@") missing=()
  ((${#wanted[@]})) || wanted=("${PACKAGES[@]}")
  for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "== installing: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# ccache keeps compiled objects across build folders and clones (libtorch's
# headers make every file of the core ~30 s). It caches nothing that uses the
# precompiled <torch/torch.h> unless told that its defines and time macros may
# be trusted (316 of 1,562 calls were "could not use precompiled header"
# without), and hits across checkouts only with paths relative to the checkout.
export CCACHE_SLOPPINESS=${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$ROOT}  # paths inside the tree are rewritten relative: hits across clones
launcher() { command -v ccache >/dev/null && echo "-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache"; }

build() {
  # shellcheck disable=SC2046
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSASREC_WERROR=ON $(launcher) >/dev/null
  cmake --build "$BUILD" -j"$(nproc)"
}

# OpenMP threads that spin while waiting starve each other (and the sampler
# threads) on a small or shared machine; passive waiting costs nothing here.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}

# Sanitizer builds in their own folders (RelWithDebInfo for readable reports).
# Third-party libraries (libtorch, OpenMPI, HDF5) are not instrumented; their
# leaks at exit are not ours, so LeakSanitizer is off. Any report fails the run.
sanitize() {
  local start=$SECONDS
  cmake -S "$ROOT" -B "$ROOT/build-asan" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSASREC_SANITIZE=address \
    -DSASREC_WERROR=ON >/dev/null
  # Every test labelled `unit` in tests/CMakeLists.txt, as ctest lists them.
  local unit_tests
  mapfile -t unit_tests < <(cd "$ROOT/build-asan" && ctest -N -L unit | sed -n 's/^ *Test *#[0-9]*: *//p')
  cmake --build "$ROOT/build-asan" -j"$(nproc)" --target "${unit_tests[@]}"
  (cd "$ROOT/build-asan" &&
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -L unit)
  echo "== ASan+UBSan unit tests passed ($((SECONDS - start)) s so far)"
  cmake -S "$ROOT" -B "$ROOT/build-tsan" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSASREC_SANITIZE=thread \
    -DSASREC_WERROR=ON >/dev/null
  cmake --build "$ROOT/build-tsan" -j"$(nproc)" --target test_sampler
  # setarch -R: TSan's shadow memory needs the kernel's address randomization off on recent kernels.
  (cd "$ROOT/build-tsan" && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    setarch "$(uname -m)" -R ./tests/test_sampler)
  echo "== sanitizers: all clean in $((SECONDS - start)) s"
}

# ---- the CUDA build -------------------------------------------------------------
# libtorch with CUDA = the C++ parts of PyPI's torch 2.11.0+cu130 wheel (the
# GPU machines' PyTorch), unpacked into .cuda/site/ in site-packages' layout:
# the wheel's RPATH ($ORIGIN/../../nvidia/...) then finds the three
# libraries that come from their own wheels (tools/cuda_wheels.txt), and
# everything else CUDA (cudart, cuBLAS, cuDNN, NCCL) is the toolkit's, at the
# versions the wheel pins. Wheels are cached outside the tree, hash-checked.
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
CUDA_SITE="$ROOT/.cuda/site"
CUDA_BUILD=${SASREC_CUDA_BUILD_DIR:-$ROOT/build-cuda}
WHEELS=${SASREC_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sasrec-ddp/wheels}

cuda_deps() {
  local start=$SECONDS
  if ! command -v nvcc >/dev/null && [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
    echo "cuda-deps: no nvcc on PATH or in $CUDA_HOME/bin: install the CUDA 13 toolkit or set CUDA_HOME" >&2
    exit 2
  fi
  local want
  want=$(sha256sum "$ROOT/tools/cuda_wheels.txt" | cut -d' ' -f1)
  if [ "$(cat "$CUDA_SITE/.complete" 2>/dev/null)" = "$want" ]; then return; fi
  python3 -m pip --version >/dev/null 2>&1 || deps python3-pip
  mkdir -p "$WHEELS"
  echo "== cuda-deps: the wheels of tools/cuda_wheels.txt into $WHEELS"
  # The platform and Python tags fix which file each pin is, whatever python3 runs pip.
  python3 -m pip download -q --no-deps --require-hashes --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -r "$ROOT/tools/cuda_wheels.txt" -d "$WHEELS"
  echo "== cuda-deps: unpacking libtorch into $CUDA_SITE"
  rm -rf "$CUDA_SITE" && mkdir -p "$CUDA_SITE"
  # Only the C++ parts: headers, shared libraries, CMake config (no Python modules).
  python3 - "$ROOT/tools/cuda_wheels.txt" "$WHEELS" "$CUDA_SITE" <<'PY'
import glob, os, re, sys, zipfile
reqs, wheels, site = sys.argv[1:]
for line in open(reqs):
    m = re.match(r"([A-Za-z0-9_.-]+)==([^ ]+)", line)
    if not m:
        continue
    stem = m.group(1).replace("-", "_") + "-" + m.group(2) + "-"
    (path,) = [p for p in glob.glob(os.path.join(wheels, "*.whl")) if os.path.basename(p).startswith(stem)]
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if re.match(r"torch/(include|lib|share)/|nvidia/[^/]+/lib/", name) and not name.endswith("libtorch_python.so"):
                z.extract(name, site)
PY
  echo "$want" >"$CUDA_SITE/.complete"
  echo "== cuda-deps: done in $((SECONDS - start)) s ($(du -sh "$CUDA_SITE" | cut -f1))"
}

cuda_build() {
  local start=$SECONDS
  # Torch's CMake config finds its libraries by find_library, which would
  # take Debian's libtorch-dev from /usr/lib first: the wheel's prefix goes
  # first, and a cache that holds another c10 is configured afresh.
  if [ -f "$CUDA_BUILD/CMakeCache.txt" ] && ! grep -q "^c10_LIBRARY:FILEPATH=$CUDA_SITE/" "$CUDA_BUILD/CMakeCache.txt"; then
    rm -f "$CUDA_BUILD/CMakeCache.txt"
  fi
  # shellcheck disable=SC2046
  cmake -S "$ROOT" -B "$CUDA_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSASREC_WERROR=ON $(launcher) \
    -DCMAKE_PREFIX_PATH="$CUDA_SITE/torch" -DTorch_DIR="$CUDA_SITE/torch/share/cmake/Torch" \
    -DCUDAToolkit_ROOT="$CUDA_HOME" -DNCCL_ROOT="$CUDA_HOME" \
    -DCMAKE_CUDA_COMPILER="$CUDA_HOME/bin/nvcc" -DTORCH_CUDA_ARCH_LIST="9.0" >/dev/null
  if ! grep -q "^c10_LIBRARY:FILEPATH=$CUDA_SITE/" "$CUDA_BUILD/CMakeCache.txt"; then
    echo "cuda-test: CMake did not take the wheel's libtorch from $CUDA_SITE (see $CUDA_BUILD/CMakeCache.txt)" >&2
    exit 1
  fi
  cmake --build "$CUDA_BUILD" -j"$(nproc)"
  echo "== cuda build: done in $((SECONDS - start)) s"
}

run_tests() {
  # shellcheck source=tools/blas_env.sh
  BIN="$1/sasrec_ddp" source "$ROOT/tools/blas_env.sh"  # the trainer's BLAS kernels for every test
  cd "$1" && shift
  ctest --output-on-failure --timeout 900 "$@"
}

quickstart() {
  local out="$ROOT/runs/quickstart"
  mkdir -p "$out"
  echo "== 1/3 synthetic interaction log (CSV with string ids and timestamps)"
  "$BUILD/sasrec_synth" --users 20000 --items 3000 --mean-length 12 --seed 1 \
    --format csv --order shuffled --out "$out/interactions.csv"
  echo "== 2/3 csv2h5"
  "$BUILD/csv2h5" "$out/interactions.csv" "$out/interactions.h5"
  echo "== 3/3 training (configs/quickstart.yaml)"
  # A checkpoint folder holds one run (a fresh run in another's is refused):
  # a rerun of the quickstart starts over, so its previous run goes first.
  if [ -e "$out/checkpoints" ] || [ -e "$out/metrics.jsonl" ]; then
    echo "   (removing the previous quickstart run: $out/checkpoints, $out/metrics.jsonl)"
    rm -rf "$out/checkpoints" "$out/metrics.jsonl"
  fi
  (cd "$ROOT" && "$BUILD/sasrec_ddp" configs/quickstart.yaml)
  echo "== metrics: $out/metrics.jsonl; the generator's oracle and popularity figures: $out/interactions.csv.oracle.json"
}

case "${1:-}" in
  deps) deps ;;
  build) deps; build ;;
  test) shift; deps; build; run_tests "$BUILD" "$@" ;;
  cuda-deps) deps; cuda_deps ;;
  cuda-test) shift; deps; cuda_deps; cuda_build; run_tests "$CUDA_BUILD" "$@" ;;
  quickstart) deps; build; quickstart ;;
  sanitize) deps; sanitize ;;
  fuzz) shift; bash "$ROOT/tools/fuzz.sh" "$@" ;;
  *) echo "usage: bash tools/dev.sh quickstart|test|build|deps|sanitize|fuzz|cuda-deps|cuda-test" >&2; exit 2 ;;
esac
