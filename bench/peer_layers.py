#!/usr/bin/env python3
"""PyTorch peer for bench/bench_layers.cpp: the same layers and shapes, forward (no_grad) and
forward+backward (sum of outputs), median of repeated runs in microseconds; kasmina_active's
composition (the host layer plus two bottleneck seeds, blended) forward; and the demo network's
training step (tools/train/model.h). On CUDA also each training step's peak memory
(torch.cuda.max_memory_allocated), as kasmina-bench measures its own.
CPU: the CPU set of BENCHMARKS.md with the given thread count (host clock).
CUDA: the GPU set, cudnn.benchmark on, TF32 off unless --tf32, timed with CUDA events.
--json PATH also writes the results in kasmina-bench's schema (tools/bench_tool.cpp reads it).
Usage: OMP_NUM_THREADS=2 python3 bench/peer_layers.py [--threads 2] [--device cpu|cuda] [--tf32] [--json PATH]"""
import argparse
import json
import statistics
import time

import torch


# BENCHMARKS.md sizes: the layers' widths and the input shapes, per device.
SIZES = {
    True: dict(features=1024, channels=64, heads=16, linear=(8192, 1024), image=(64, 64, 56, 56),
               tokens=(32, 512, 1024), layernorm=(16384, 1024)),
    False: dict(features=512, channels=32, heads=8, linear=(256, 512), image=(8, 32, 32, 32),
                tokens=(8, 64, 256), layernorm=(2048, 512)),
}


def workloads(gpu):
    torch.manual_seed(1)
    s = SIZES[gpu]
    embed = s["tokens"][2]
    mha = torch.nn.MultiheadAttention(embed, s["heads"], batch_first=True)
    yield "linear", torch.nn.Linear(s["features"], s["features"]), s["linear"]
    yield "conv2d", torch.nn.Conv2d(s["channels"], s["channels"], 3, padding=1), s["image"]
    yield "mha", (lambda x: mha(x, x, x, need_weights=False)[0], mha), s["tokens"]
    del mha  # not held on the device while the later workloads' memory is measured
    yield "layernorm", torch.nn.LayerNorm(s["features"]), s["layernorm"]
    yield "batchnorm2d", torch.nn.BatchNorm2d(s["channels"]), s["image"]
    yield "batchnorm1d", torch.nn.BatchNorm1d(s["features"]), s["linear"]


# kasmina_active's peer (BENCHMARKS.md): the host layer and 2 bottleneck seeds of width 64 at alpha 0.3,
# blended as SPEC.md writes it, from PyTorch modules (bench/kasmina_workloads.h builds the same from
# ours). Forward only; the row it answers is kasmina-bench's "kasmina fwd".
ALPHA, WIDTH = 0.3, 64


def active_workloads(gpu):
    torch.manual_seed(2)
    s = SIZES[gpu]
    f, c = s["features"], s["channels"]
    linear_seeds = [torch.nn.Sequential(torch.nn.Linear(f, WIDTH), torch.nn.GELU(), torch.nn.Linear(WIDTH, f)) for _ in range(2)]
    conv_seeds = [torch.nn.Sequential(torch.nn.Conv2d(c, WIDTH, 1), torch.nn.ReLU(), torch.nn.Conv2d(WIDTH, c, 3, padding=1))
                  for _ in range(2)]
    yield "kasmina_active_linear", torch.nn.Linear(f, f), linear_seeds, s["linear"]
    yield "kasmina_active_conv2d", torch.nn.Conv2d(c, c, 3, padding=1), conv_seeds, s["image"]


def composition(host, seeds):
    total = ALPHA * len(seeds)
    strength = min(total, 1.0)

    def forward(x):
        mixed = None
        for seed in seeds:
            term = seed(x) * ALPHA
            mixed = term if mixed is None else mixed + term
        return host(x) * (1.0 - strength) + mixed * (strength / total)
    return forward


class FashionNet(torch.nn.Module):
    """tools/train/model.h's demo network (width 32), layer for layer."""

    def __init__(self, width=32):
        super().__init__()
        features, hidden = 2 * width, 4 * width
        self.conv1 = torch.nn.Conv2d(1, width, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(width)
        self.conv2 = torch.nn.Conv2d(width, features, 3, stride=2, padding=1)
        self.bn2 = torch.nn.BatchNorm2d(features)
        self.conv3 = torch.nn.Conv2d(features, features, 3, stride=2, padding=1)
        self.bn3 = torch.nn.BatchNorm2d(features)
        self.norm = torch.nn.LayerNorm(features)
        self.attention = torch.nn.MultiheadAttention(features, 4, batch_first=True)
        self.fc1 = torch.nn.Linear(features, hidden)
        self.bn4 = torch.nn.BatchNorm1d(hidden)
        self.fc2 = torch.nn.Linear(hidden, 10)

    def forward(self, images):
        x = torch.relu(self.bn1(self.conv1(images)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.relu(self.bn3(self.conv3(x)))
        tokens = x.reshape(x.shape[0], x.shape[1], 49).transpose(1, 2)
        normalized = self.norm(tokens)
        tokens = tokens + self.attention(normalized, normalized, normalized, need_weights=False)[0]
        pooled = tokens.mean(1)
        return self.fc2(torch.relu(self.bn4(self.fc1(pooled))))


def train_step_workload(device, batch=256):
    """The demo training step kasmina-bench's train_step runs: cross entropy, SGD with momentum."""
    torch.manual_seed(1)
    network = FashionNet().to(device).train()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(batch, 1, 28, 28, device=device)
    labels = (torch.arange(batch) % 10).to(device)

    def step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(network(images), labels).backward()
        optimizer.step()
    return step


def peak_bytes(fn):
    """The most bytes of tensors held during one call of fn (CUDA), those alive before it included."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def timings_us(fn, gpu, min_time=0.5):
    for _ in range(5):
        fn()
    samples, start = [], time.perf_counter()
    while time.perf_counter() - start < min_time or len(samples) < 20:
        if gpu:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(begin.elapsed_time(end) * 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e6)
    return samples


def summary(samples):
    ordered = sorted(samples)
    pick = lambda q: ordered[int(q * (len(ordered) - 1) + 0.5)]
    return {"median_us": statistics.median(samples), "p10_us": pick(0.1), "p90_us": pick(0.9), "samples": len(samples)}


def layer_results(name, module, shape, device):
    """A layer's forward and forward+backward timings (and, on CUDA, the training step's peak memory)."""
    gpu = device == "cuda"
    forward, owner = (module if isinstance(module, tuple) else (module, module))
    owner.to(device).train()
    x = torch.randn(*shape, device=device)
    with torch.no_grad():
        fwd_samples = timings_us(lambda: forward(x), gpu)
    xg = x.clone().requires_grad_(True)

    def step():
        owner.zero_grad()
        xg.grad = None
        forward(xg).sum().backward()

    both_samples = timings_us(step, gpu)
    print(f"{name:12s} fwd {statistics.median(fwd_samples):10.1f} us   fwd+bwd {statistics.median(both_samples):10.1f} us")
    return [{"workload": name, "pass": "fwd", "implementation": "pytorch", **summary(fwd_samples)},
            {"workload": name, "pass": "fwd+bwd", "implementation": "pytorch", **summary(both_samples),
             "peak_bytes": peak_bytes(step) if gpu else None}]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--tf32", action="store_true")
    parser.add_argument("--json", help="also write results in the kasmina-bench/1 schema to this file")
    args = parser.parse_args()
    gpu = args.device == "cuda"
    torch.set_num_threads(args.threads)
    if gpu:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    print(f"torch {torch.__version__}, device {args.device}, {args.threads} threads, tf32 {args.tf32}")
    results = []
    for name, module, shape in workloads(gpu):
        results += layer_results(name, module, shape, args.device)
    for name, host, seeds, shape in active_workloads(gpu):
        for module in [host, *seeds]:
            module.to(args.device).train()
        x = torch.randn(*shape, device=args.device)
        forward = composition(host, seeds)
        with torch.no_grad():
            samples = timings_us(lambda: forward(x), gpu)
        print(f"{name:12s} composition fwd {statistics.median(samples):10.1f} us")
        results.append({"workload": name, "pass": "kasmina fwd", "implementation": "pytorch", **summary(samples)})
        del x, host, seeds, forward, module
    step = train_step_workload(args.device)
    samples = timings_us(step, gpu)
    print(f"train_step   step {statistics.median(samples):10.1f} us")
    results.append({"workload": "train_step", "pass": "step", "implementation": "pytorch", **summary(samples),
                    "peak_bytes": peak_bytes(step) if gpu else None})
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"schema": "kasmina-bench/1", "implementation": "pytorch",
                       "implementation_version": f"torch {torch.__version__}", "device": args.device,
                       "threads": args.threads, "tf32": args.tf32, "results": results}, out, indent=2)


if __name__ == "__main__":
    main()
