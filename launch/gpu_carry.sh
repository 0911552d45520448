#!/usr/bin/env bash
# launch/gpu_carry.sh: on a development machine (Debian 12, apt, the
# project's machines), everything launch/gpu_check.sh needs on a GPU machine
# that has no network, into .carry/ (ignored; the device tool's
# `carry: [".carry"]`, under its 64 MiB limit):
#   .carry/debs/    the Debian packages the build needs beyond the GPU image's
#                   toolchain (nvcc, CMake, ninja, g++, PyTorch): HDF5, yaml-cpp,
#                   CLI11, nlohmann-json, GoogleTest, OpenMPI, OpenBLAS, with
#                   their libraries; gpu_check.sh unpacks them with dpkg -x
#                   into .carry/root, never into /
#   .carry/shared/  ../shared/bench/torch_reference.py and ../shared/data/Beauty.txt
#                   (../shared does not travel)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$ROOT/.carry/debs" "$ROOT/.carry/shared"
cd "$ROOT/.carry/debs"
PACKAGES=(libhdf5-dev libhdf5-103-1 libhdf5-cpp-103-1 libhdf5-hl-100 libsz2 libaec0 libaec-dev libcurl4 libjpeg62-turbo
          libyaml-cpp-dev libyaml-cpp0.7 libcli11-dev nlohmann-json3-dev libgtest-dev
          libopenmpi-dev libopenmpi3 openmpi-bin openmpi-common libpmix2 libhwloc15 libhwloc-plugins
          libevent-core-2.1-7 libevent-pthreads-2.1-7 libfabric1 libucx0 libpsm2-2 libibverbs1 librdmacm1
          libnl-3-200 libnl-route-3-200 libpsm-infinipath1 libnuma1 libltdl7 libefa1 libmunge2
          libopenblas0-pthread libopenblas-pthread-dev libgfortran5)
[ -n "$(ls -A . 2>/dev/null)" ] || apt-get download "${PACKAGES[@]}"
cp "$ROOT/../shared/bench/torch_reference.py" "$ROOT/../shared/data/Beauty.txt" "$ROOT/.carry/shared/"
du -sh "$ROOT/.carry"
