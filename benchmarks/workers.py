"""Subprocess workers for the contention section of bench.py (each in its own process, because OpenMP reads
OMP_WAIT_POLICY / OMP_NUM_THREADS once, when torch is imported: the caller sets them in the environment).

    python benchmarks/workers.py train --threads 2 --seconds 3 --min-steps 3   # one JSON line per step
    python benchmarks/workers.py busy                  # 1-thread matmul until killed (prints "ready" first)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def train(threads: int, seconds: float, min_steps: int, max_seconds: float, batch: int, device: str = "cpu",
          compile_mode: str = "none", what: str = "train", go: str = "") -> None:
    """Our UNet's train step on the latent shape (the stage-2 workload): one warm-up step, then steps until
    both `min_steps` and `seconds` are reached (or `max_seconds` has passed). Prints one JSON line per step as it
    goes ({"warmup": s}, then {"step": s} each), so a parent that kills it at a deadline keeps what finished.

    For the GPU check (benchmarks/gpu_check.py): `device` (cuda), `compile_mode` (none, default, reduce-overhead:
    CUDA graphs), `what` (train, or sample: one no-grad denoiser call per sampler step), and `go`: a file to wait
    for after the warm-up (it prints {"ready": true} first), so that k workers on one GPU are timed together."""
    import torch
    from torch.nn import functional as F

    from benchmarks.unets import SHAPES, our_unet

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    c, s = SHAPES["latent"]
    net = our_unet(c, s).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x, target = torch.randn(batch, c, s, s, device=device), torch.randn(batch, c, s, s, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)
    fn = net if compile_mode == "none" else torch.compile(net, mode=None if compile_mode == "default" else compile_mode)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def step() -> float:
        t0 = time.perf_counter()
        if what == "sample":
            with torch.no_grad():
                fn(x, t)
        else:
            loss = F.mse_loss(fn(x, t), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync()
        return time.perf_counter() - t0

    print(json.dumps({"threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}),
          flush=True)
    warm = 1 if compile_mode == "none" else 3  # compiled: the compile, the graph capture, the first replay
    print(json.dumps({"warmup": sum(step() for _ in range(warm))}), flush=True)
    if go:
        print(json.dumps({"ready": True}), flush=True)
        deadline = time.perf_counter() + max_seconds
        while not os.path.exists(go) and time.perf_counter() < deadline:
            time.sleep(0.01)
    n, start = 0, time.perf_counter()
    while True:
        print(json.dumps({"step": step()}), flush=True)
        n += 1
        elapsed = time.perf_counter() - start
        if (n >= min_steps and elapsed >= seconds) or elapsed >= max_seconds:
            break


def busy() -> None:
    """One busy core: a 1-thread matmul loop, until the parent kills this process."""
    import torch

    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    print("ready", flush=True)
    while True:
        a = torch.tanh(a @ a)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--seconds", type=float, default=3.0)
    t.add_argument("--min-steps", type=int, default=3)
    t.add_argument("--max-seconds", type=float, default=60.0)
    t.add_argument("--batch", type=int, default=128)
    t.add_argument("--device", default="cpu")
    t.add_argument("--compile", default="none", choices=["none", "default", "reduce-overhead"])
    t.add_argument("--what", default="train", choices=["train", "sample"])
    t.add_argument("--go", default="", help="wait for this file after the warm-up")
    sub.add_parser("busy")
    args = p.parse_args()
    if args.cmd == "busy":
        busy()
    else:
        train(args.threads, args.seconds, args.min_steps, args.max_seconds, args.batch, args.device, args.compile,
              args.what, args.go)


if __name__ == "__main__":
    main()
