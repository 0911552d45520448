#!/usr/bin/python3
"""GEMM rate of this machine through the BLAS libtorch uses (Debian's torch, same
OpenBLAS as sasrec_ddp), for a big square product and for the shapes of one
SASRec training step on Beauty (N ~ 733 packed items, d = 50), per thread count.

    /usr/bin/python3 bench/gemm_rate.py [THREADS ...]

The step's FLOP floor in docs/results.md divides the step's FLOPs by these rates.
"""
import sys, time
import torch


def rate(m, k, n, threads, seconds=1.0, reuse=False):
    """GFLOP/s of an (m x k) (k x n) product; `reuse`: into one output buffer (no fresh pages each time)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    mm = (lambda: torch.mm(a, b, out=out)) if reuse else (lambda: a @ b)
    for _ in range(3):
        mm()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        mm()
        reps += 1
    return 2.0 * m * k * n * reps / (time.perf_counter() - t0) / 1e9


def main():
    threads = [int(t) for t in sys.argv[1:]] or [1, 2]
    shapes = [("512 x 512 x 512", 512, 512, 512), ("733 x 50 x 50 (projection)", 733, 50, 50),
              ("733 x 50 x 12102 (full logits, 35 MB out)", 733, 50, 12102),
              ("64 x 50 x 1024 (one eval block, in cache)", 64, 50, 1024), ("6 x 50 x 6 (one sequence's QK^T)", 6, 50, 6)]
    print(f"{'GEMM (m x k x n)':44}" + "".join(f"{f'{t} thr GFLOP/s':>16}" for t in threads))
    for name, m, k, n in shapes:
        print(f"{name:44}" + "".join(f"{rate(m, k, n, t):16.1f}" for t in threads))
    # loss ce's three logits products (the fused step's, into buffers it reuses every step)
    ce = [("ce logits 733 x 50 x 12101 (reused out)", 733, 50, 12101),
          ("ce dh 733 x 12101 x 50 (reused out)", 733, 12101, 50),
          ("ce dM 12101 x 733 x 50 (reused out)", 12101, 733, 50)]
    for name, m, k, n in ce:
        print(f"{name:44}" + "".join(f"{rate(m, k, n, t, reuse=True):16.1f}" for t in threads))


if __name__ == "__main__":
    main()
