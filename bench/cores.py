#!/usr/bin/python3
"""Do this machine's cores add up? The ceiling on any two-thread speed-up here.

    OPENBLAS_CORETYPE=$(build/sasrec_ddp --blas-kernels) /usr/bin/python3 bench/cores.py [SECONDS]

(the trainer's BLAS kernels, include/sasrec/blas_kernels.h).

For a few kernels of a SASRec step, each as one single-threaded process: its rate
alone on CPU 0, then the rates of two copies at the same moment, one on CPU 0 and
one on CPU 1. "together / alone" is what two cores deliver against one for that
kernel: about 2 on two physical cores, about 1-1.3 when the two logical CPUs are
hyperthreads of one core (a VM's vCPUs often are, whatever lscpu says) or when
the machine is busy. A two-thread training step cannot beat the ratio of the
kernels it spends its time in. Run it on a quiet machine; it prints the load.
"""
import multiprocessing as mp
import os
import sys
import time

import torch


def kernels():
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    a5, b5 = torch.randn(512, 512, generator=g), torch.randn(512, 512, generator=g)
    o5 = torch.empty(512, 512)
    xp, wp = torch.randn(733, 50, generator=g), torch.randn(50, 50, generator=g)
    op = torch.empty(733, 50)
    big = torch.randn(16 << 20, generator=g)  # 64 MB, out of L2: memory bandwidth
    dst = torch.empty_like(big)
    small = torch.randn(4096, generator=g)  # in L1: exp on vector lanes
    so = torch.empty_like(small)
    return [
        ("GEMM 512 x 512 x 512", "GFLOP/s", 2 * 512 ** 3 / 1e9, lambda: torch.mm(a5, b5, out=o5)),
        ("GEMM 733 x 50 x 50 (a projection)", "GFLOP/s", 2 * 733 * 50 * 50 / 1e9, lambda: torch.mm(xp, wp, out=op)),
        ("copy 64 MB", "GB/s", 2 * big.numel() * 4 / 1e9, lambda: dst.copy_(big)),
        ("exp of 4,096 floats (in L1)", "Gelem/s", small.numel() / 1e9, lambda: torch.exp(small, out=so)),
    ]


def measure(cpu, index, seconds, start, out):
    os.sched_setaffinity(0, {cpu})
    name, unit, work, fn = kernels()[index]
    for _ in range(3):
        fn()
    start.wait()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        reps += 1
    out.put((cpu, work * reps / (time.perf_counter() - t0)))


def run(cpus, index, seconds):
    start = mp.Barrier(len(cpus))
    out = mp.Queue()
    procs = [mp.Process(target=measure, args=(c, index, seconds, start, out)) for c in cpus]
    for p in procs:
        p.start()
    rates = dict(out.get() for _ in procs)
    for p in procs:
        p.join()
    return [rates[c] for c in cpus]


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        sys.exit("cores.py: this process may use one CPU only; nothing to compare")
    pair = cpus[:2]
    print(f"CPUs {pair[0]} and {pair[1]}; load average {os.getloadavg()[0]:.2f} before")
    print(f"{'kernel (one thread a process)':36}{'unit':>9}{'alone':>9}{'together':>18}{'together / alone':>18}")
    for i, (name, unit, _, _) in enumerate(kernels()):
        alone = run(pair[:1], i, seconds)[0]
        both = run(pair, i, seconds)
        print(f"{name:36}{unit:>9}{alone:9.1f}{both[0]:9.1f} +{both[1]:7.1f}{sum(both) / alone:18.2f}")
    print(f"load average {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
