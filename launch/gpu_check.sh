#!/usr/bin/env bash
# launch/gpu_check.sh OUT_DIR: the whole GPU check in one run, on a GPU
# machine with PyTorch (CUDA + NCCL) in its python3 and the Debian packages of
# launch/fetch_gpu_debs.sh in .carry/debs. Unpacks them into .carry/root,
# builds against PyTorch's libtorch with CUDA and NCCL, runs the test suite
# (gpu label included), trains Beauty on one GPU with our trainer and with
# ../shared/bench/torch_reference.py, and writes OUT_DIR/gpu_table.md.
# Budget: under 10 minutes.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:?usage: launch/gpu_check.sh OUT_DIR}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
PREFIX="$ROOT/.carry/root"
mkdir -p "$PREFIX"
for deb in "$ROOT"/.carry/debs/*.deb; do dpkg -x "$deb" "$PREFIX"; done
export PATH="$PREFIX/usr/bin:$PATH"
export LD_LIBRARY_PATH="$PREFIX/usr/lib/x86_64-linux-gnu:$PREFIX/usr/lib/x86_64-linux-gnu/openmpi/lib:${LD_LIBRARY_PATH:-}"
export OPAL_PREFIX="$PREFIX/usr/lib/x86_64-linux-gnu/openmpi"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

TORCH_DIR=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
NCCL_ROOT=$(python3 -c 'import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__))' 2>/dev/null || true)
BUILD="$ROOT/build-gpu"
time cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TORCH_DIR;$PREFIX/usr" \
  -DNCCL_ROOT="$NCCL_ROOT" -DMPI_CXX_COMPILER="$PREFIX/usr/bin/mpicxx" \
  -DHDF5_ROOT="$PREFIX/usr/lib/x86_64-linux-gnu/hdf5/serial" -DCMAKE_CUDA_ARCHITECTURES=90
time cmake --build "$BUILD" -j"$(nproc)"
export OMP_WAIT_POLICY=passive
(cd "$BUILD" && ctest --output-on-failure -j4 --timeout 300) | tee "$OUT/ctest.txt" || true

"$BUILD/csv2h5" "$ROOT/../shared/data/Beauty.txt" "$OUT/beauty.h5" --format seq
for device in cuda cpu; do
  "$BUILD/sasrec_ddp" "$ROOT/configs/beauty.yaml" --set data.path="$OUT/beauty.h5" --set runtime.device=$device \
    --set train.epochs=3 --set eval.every=0 --set train.threads=8 --set output.metrics="$OUT/ours_$device.jsonl" \
    | tee "$OUT/ours_$device.log"
done
"$BUILD/sasrec_ddp" "$ROOT/configs/beauty.yaml" --set data.path="$OUT/beauty.h5" --set runtime.device=cuda \
  --set runtime.comm=nccl --set train.epochs=1 --set eval.every=0 --set output.metrics="$OUT/ours_nccl.jsonl" \
  | tee "$OUT/ours_nccl.log"
python3 "$ROOT/../shared/bench/torch_reference.py" "$ROOT/../shared/data/Beauty.txt" --device cuda --epochs 3 \
  --eval | tee "$OUT/reference_cuda.json"

python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
def ours(path):
    ev = [json.loads(l) for l in open(path)]
    ep = [e for e in ev if e["event"] == "train_epoch"]
    test = {e["protocol"]: e for e in ev if e["event"] == "eval" and e["split"] == "test"}
    return ep[-1]["seqs_per_s"], test.get("full", {}).get("hr@10"), test.get("full", {}).get("ndcg@10")
ref = json.loads(open(os.path.join(out, "reference_cuda.json")).read().strip().splitlines()[-1])
rows = [("ours, cuda", *ours(os.path.join(out, "ours_cuda.jsonl"))),
        ("ours, cpu", *ours(os.path.join(out, "ours_cpu.jsonl"))),
        ("ours, cuda + nccl (1 rank)", *ours(os.path.join(out, "ours_nccl.jsonl"))),
        ("torch_reference.py, cuda", ref["sequences_per_s"], ref.get("full_hr10"), ref.get("full_ndcg10"))]
with open(os.path.join(out, "gpu_table.md"), "w") as f:
    f.write("| run (Beauty, 3 epochs) | sequences/s | test full HR@10 | NDCG@10 |\n|---|---|---|---|\n")
    for r in rows:
        f.write("| %s | %s | %s | %s |\n" % r)
print(open(os.path.join(out, "gpu_table.md")).read())
PY
