#!/usr/bin/env python3
"""PyTorch peer for bench/bench_layers.cpp: the same layers and shapes on the CPU, same thread count,
forward (no_grad) and forward+backward (sum of outputs), median of repeated runs in microseconds.
Usage: OMP_NUM_THREADS=2 python3 bench/peer_layers.py [--threads 2]"""
import argparse
import statistics
import time

import torch


def workloads():
    torch.manual_seed(1)
    yield "linear", torch.nn.Linear(512, 512), torch.randn(256, 512)
    yield "conv2d", torch.nn.Conv2d(32, 32, 3, padding=1), torch.randn(8, 32, 32, 32)
    mha = torch.nn.MultiheadAttention(256, 8, batch_first=True)
    yield "mha", (lambda x: mha(x, x, x, need_weights=False)[0], mha), torch.randn(8, 64, 256)
    yield "layernorm", torch.nn.LayerNorm(512), torch.randn(2048, 512)
    yield "batchnorm2d", torch.nn.BatchNorm2d(32), torch.randn(8, 32, 32, 32)
    yield "batchnorm1d", torch.nn.BatchNorm1d(512), torch.randn(256, 512)


def median_us(fn, min_time=0.5):
    for _ in range(5):
        fn()
    samples, start = [], time.perf_counter()
    while time.perf_counter() - start < min_time or len(samples) < 20:
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(samples)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads")
    for name, module, x in workloads():
        forward, owner = (module if isinstance(module, tuple) else (module, module))
        owner.train()
        with torch.no_grad():
            fwd = median_us(lambda: forward(x))
        xg = x.clone().requires_grad_(True)

        def step():
            owner.zero_grad()
            xg.grad = None
            forward(xg).sum().backward()

        both = median_us(step)
        print(f"{name:12s} fwd {fwd:10.1f} us   fwd+bwd {both:10.1f} us")


if __name__ == "__main__":
    main()
