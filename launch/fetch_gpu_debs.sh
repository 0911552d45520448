#!/usr/bin/env bash
# launch/fetch_gpu_debs.sh: on a development machine (Debian 12, with apt),
# download the Debian packages the GPU build needs into .carry/debs, to travel
# with the working tree to a GPU machine that has no network (the device
# tool's `carry: [".carry"]`). launch/gpu_check.sh unpacks them there with
# dpkg -x into .carry/root, never into /.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$ROOT/.carry/debs"
cd "$ROOT/.carry/debs"
PACKAGES=(libhdf5-dev libhdf5-103-1 libsz2 libaec0 libcurl4 libyaml-cpp-dev libyaml-cpp0.7 libcli11-dev
          nlohmann-json3-dev libgtest-dev libopenmpi-dev libopenmpi3 openmpi-bin openmpi-common
          libpmix2 libhwloc15 libevent-core-2.1-7 libevent-pthreads-2.1-7 libfabric1 libucx0 libpsm2-2
          libibverbs1 librdmacm1 libnl-3-200 libnl-route-3-200 libpsm-infinipath1 libnuma1 libltdl7)
apt-get download "${PACKAGES[@]}"
du -sh "$ROOT/.carry/debs"
