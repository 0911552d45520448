#!/usr/bin/env bash
# launch/gpu_check.sh OUT_DIR: the whole GPU check in one run, on a GPU
# machine with PyTorch (CUDA + NCCL) in its python3, nvcc, CMake and ninja,
# and no network. Prepare on the development machine first:
#   bash launch/gpu_carry.sh        # .carry/: Debian packages, Beauty.txt, torch_reference.py
# then (device tool): carry [".carry"], command `bash launch/gpu_check.sh $OUT`.
#
# It unpacks the packages into .carry/root (dpkg -x, never into /), builds
# every target against the machine's own PyTorch (its libtorch, CUDA and the
# NCCL of its nvidia-nccl wheel) with warnings as errors, and then:
#   1. the test suite's gpu label (CUDA against CPU forward, kernels and one
#      training step, bf16, the captured step, NCCL with one rank, device
#      selection and free memory) and the unit label
#   2. Beauty, the paper's hyperparameters: our trainer on CUDA (fp32, bf16,
#      bf16 + CUDA graphs, NCCL with one rank) against torch_reference.py
#      --device cuda, sequences/s and test metrics after the same epochs
#   3. full-catalog evaluation time: Beauty, and a synthetic 100k users x 1M items
# and writes OUT_DIR/gpu_table.md (with the logs beside it). Budget: under
# 10 minutes on one H200 with 16 cores.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:?usage: launch/gpu_check.sh OUT_DIR}
EPOCHS=${GPU_CHECK_EPOCHS:-5}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
start=$SECONDS
stage() { echo "== [$((SECONDS - start)) s] $*"; }

PREFIX="$ROOT/.carry/root"
SHARED="$ROOT/.carry/shared"
[ -d "$ROOT/../shared/data" ] && SHARED_DATA="$ROOT/../shared/data" || SHARED_DATA="$SHARED"
[ -f "$ROOT/../shared/bench/torch_reference.py" ] && REF="$ROOT/../shared/bench/torch_reference.py" || REF="$SHARED/torch_reference.py"
stage "unpacking $(ls "$ROOT"/.carry/debs/*.deb 2>/dev/null | wc -l) packages into $PREFIX"
mkdir -p "$PREFIX"
for deb in "$ROOT"/.carry/debs/*.deb; do dpkg -x "$deb" "$PREFIX"; done
LIB="$PREFIX/usr/lib/x86_64-linux-gnu"
export PATH="$PREFIX/usr/bin:$PATH"
export LD_LIBRARY_PATH="$LIB:$LIB/openblas-pthread:$LIB/hdf5/serial:$LIB/openmpi/lib:${LD_LIBRARY_PATH:-}"
export OPAL_PREFIX="$LIB/openmpi" OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMP_WAIT_POLICY=passive
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
nvcc --version | tail -1

stage "configure and build against python3's PyTorch"
TORCH_PREFIX=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
TORCH_VERSION=$(python3 -c 'import torch; print(torch.__version__)')
NCCL_ROOT=$(python3 -c 'import nvidia.nccl, os; print(list(nvidia.nccl.__path__)[0])' 2>/dev/null || true)
BUILD="$ROOT/build-gpu"
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSASREC_WERROR=ON \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$PREFIX/usr" -DNCCL_ROOT="$NCCL_ROOT" -DTORCH_CUDA_ARCH_LIST=9.0 \
  -DMPI_CXX_COMPILER="$PREFIX/usr/bin/mpicxx" -DMPIEXEC_EXECUTABLE="$PREFIX/usr/bin/mpirun" \
  -DHDF5_ROOT="$LIB/hdf5/serial" -DHDF5_INCLUDE_DIRS="$PREFIX/usr/include/hdf5/serial" \
  -DBLAS_LIBRARIES="$LIB/openblas-pthread/libblas.so" -DSASREC_CBLAS_INCLUDE="$PREFIX/usr/include/x86_64-linux-gnu/openblas-pthread" \
  -DGTest_DIR="$LIB/cmake/GTest" -Dyaml-cpp_DIR="$LIB/cmake/yaml-cpp" -DCLI11_DIR="$PREFIX/usr/share/cmake/CLI11" \
  -Dnlohmann_json_DIR="$PREFIX/usr/share/cmake/nlohmann_json" -DSASREC_SHARED_DATA_DIR="$SHARED_DATA" \
  > "$OUT/cmake.log" 2>&1 || { tail -40 "$OUT/cmake.log"; echo "configure FAILED"; exit 1; }
cmake --build "$BUILD" -j"$(nproc)" > "$OUT/build.log" 2>&1 || { grep -B2 -A12 -m5 "error" "$OUT/build.log"; echo "build FAILED"; exit 1; }
stage "built ($(grep -c . "$OUT/build.log") lines of build log)"

stage "tests: gpu and unit labels"
(cd "$BUILD" && ctest --output-on-failure -j8 --timeout 300 -L "gpu|unit") > "$OUT/ctest.txt" 2>&1
tail -15 "$OUT/ctest.txt"
TESTS=$(grep -E "tests passed|tests failed" "$OUT/ctest.txt" | tail -1)

stage "Beauty: ours and the reference, $EPOCHS epochs, the paper's hyperparameters"
"$BUILD/csv2h5" "$SHARED_DATA/Beauty.txt" "$OUT/beauty.h5" --format seq > /dev/null
ours() {  # NAME, extra --set ...
  local name=$1; shift
  timeout 240 "$BUILD/sasrec_ddp" "$ROOT/configs/beauty.yaml" --set data.path="$OUT/beauty.h5" --set train.epochs="$EPOCHS" \
    --set eval.every=0 --set train.threads=8 --set data.sampler_threads=4 --set output.metrics="$OUT/ours_$name.jsonl" "$@" > "$OUT/ours_$name.log" 2>&1 \
    || echo "ours $name FAILED: $(tail -3 "$OUT/ours_$name.log")"
}
ours cuda_fp32 --set runtime.device=cuda
ours cuda_bf16 --set runtime.device=cuda --set runtime.precision=bf16
ours cuda_bf16_graphs --set runtime.device=cuda --set runtime.precision=bf16 --set runtime.cuda_graphs=true
ours cuda_nccl --set runtime.device=cuda --set runtime.comm=nccl
timeout 300 python3 "$REF" "$SHARED_DATA/Beauty.txt" --device cuda --epochs "$EPOCHS" --eval > "$OUT/reference_cuda.json" 2> "$OUT/reference_cuda.log" \
  || echo "reference FAILED: $(tail -3 "$OUT/reference_cuda.log")"

stage "full-catalog evaluation: synthetic 100k users x 1M items"
"$BUILD/sasrec_synth" --users 100000 --items 1000000 --mean-length 12 --seed 1 --out "$OUT/s1m.h5" > /dev/null
timeout 240 "$BUILD/sasrec_ddp" "$ROOT/configs/scale_1m.yaml" --set data.path="$OUT/s1m.h5" --set train.max_steps=1 \
  --set train.epochs=1 --set eval.protocols=[full] --set eval.max_users=0 --set runtime.device=cuda --set output.metrics="$OUT/eval_1m.jsonl" \
  > "$OUT/eval_1m.log" 2>&1 || echo "1M evaluation FAILED: $(tail -3 "$OUT/eval_1m.log")"

stage "table"
python3 - "$OUT" "$TORCH_VERSION" "$EPOCHS" "$TESTS" <<'PY'
import json, os, sys
out, torch_version, epochs, tests = sys.argv[1:]
def events(name):
    path = os.path.join(out, name)
    return [json.loads(l) for l in open(path)] if os.path.exists(path) else []
def ours(name):
    ev = events(f"ours_{name}.jsonl")
    ep = [e for e in ev if e["event"] == "train_epoch"]
    test = {e["protocol"]: e for e in ev if e["event"] == "eval" and e["split"] == "test"}
    if not ep: return None
    seqs = sum(e["seqs_per_s"] * e["seconds"] for e in ep) / max(1e-9, sum(e["seconds"] for e in ep))
    full = test.get("full", {})
    return seqs, full.get("hr@10"), full.get("ndcg@10"), test.get("full", {}).get("seconds")
rows = []
for name, label in [("cuda_fp32", "ours, fp32"), ("cuda_bf16", "ours, bf16 autocast"),
                    ("cuda_bf16_graphs", "ours, bf16 + CUDA graphs"), ("cuda_nccl", "ours, fp32, NCCL (1 rank)")]:
    r = ours(name)
    rows.append((label,) + (r if r else (None, None, None, None)))
ref = None
try:
    ref = json.loads(open(os.path.join(out, "reference_cuda.json")).read().strip().splitlines()[-1])
    rows.append(("torch_reference.py --device cuda", ref["sequences_per_s"], ref.get("full_hr10"), ref.get("full_ndcg10"), None))
except Exception:
    rows.append(("torch_reference.py --device cuda", None, None, None, None))
fmt = lambda v, f: "failed" if v is None else format(v, f)
gpu = open(os.path.join(out, "gpu.txt")).read().strip()
lines = [f"GPU: {gpu}; PyTorch {torch_version}; tests: {tests}", "",
         f"| Beauty, paper hyperparameters, {epochs} epochs | sequences/s | test full HR@10 | NDCG@10 | vs reference |",
         "|---|---|---|---|---|"]
for label, sps, hr, nd, _ in rows:
    ratio = f"{sps / ref['sequences_per_s']:.1f}x" if ref and sps else ""
    lines.append(f"| {label} | {fmt(sps, '.0f')} | {fmt(hr, '.4f')} | {fmt(nd, '.4f')} | {ratio} |")
lines += ["", "| full-catalog evaluation (valid + test, history excluded) | users | seconds | users/s |", "|---|---|---|---|"]
for name, label in [("ours_cuda_fp32.jsonl", "Beauty, 12,101 items"), ("eval_1m.jsonl", "synthetic, 1M items")]:
    ev = [e for e in events(name) if e["event"] == "eval" and e["protocol"] == "full"]
    if ev:
        users = sum(e["users"] for e in ev); secs = sum(e["seconds"] for e in ev)
        lines.append(f"| {label} | {users} | {secs:.2f} | {users / max(1e-9, secs):.0f} |")
    else:
        lines.append(f"| {label} | failed | | |")
open(os.path.join(out, "gpu_table.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
stage "done"
