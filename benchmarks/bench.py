"""CPU benchmark of the ldm training stack: conv peak, our UNet vs diffusers at an equal config, real jobs'
steps/s and wall-time split, CPU contention, and a compute plan. Writes RESULTS.md and results.json.

    python benchmarks/bench.py [--quick] [--threads N] [--out benchmarks/RESULTS.md] [--sections a,b,...]
    make bench ARGS="--quick"

Every in-process number is the median of interleaved repetitions (A,B,C,A,B,C,...; see timing.py), with
the min-max beside it. --quick (< 3 minutes on 2 cores; a smoke run, not results): 2 reps, no torch.compile
or bf16 UNet rows, batch 8 for the conv peak, jobs of 20 steps with a stage-2 batch of 32 and 36 samples, and
batch 32 with a 3 s deadline in the contention section; the file has the same sections and tables.
Sections (ids for --sections): machine, conv, unet, jobs, contention, plan.
A full run takes about an hour on 2 cores (mostly the real jobs of section 4: 3 reps each of a vae and a
pixel-space job of 200+200 steps, and torch.compile's cold compiles); run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from benchmarks import unets as U  # noqa: E402
from benchmarks.timing import fmt, fmt_range, interleaved, rate, scale, summarize, table  # noqa: E402
from ldm.utils.machine import cpu_model  # noqa: E402

SECTIONS = {"machine": "Machine and load", "conv": "Conv peak", "unet": "UNet: ours vs diffusers at an equal config",
            "jobs": "Stage steps/s and the per-job wall-time split", "contention": "Contention",
            "plan": "Planning"}
COMPILED = ("ours", U.BASELINE)  # implementations that also get torch.compile rows (not in --quick)
FOREACH = ("ours", U.BASELINE)  # implementations that also get an eager row with multi-tensor AdamW (the training path)
BF16 = ("ours",)  # implementations that also get a bf16-autocast row (not in --quick; only with native bf16)
COUNT_BATCH = 8  # FLOPs and ops are counted at this batch, then scaled
GPU_NAME, GPU_PEAK_TFLOPS, GPU_UTIL, GPU_LAUNCH_US = "H200 SXM", 989.0, 0.30, 5.0  # assumptions, not measured
JOB_ROWS = ("vae", "identity")


# ---- small helpers ----------------------------------------------------------------------------------------
def bf16_ctx(on: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if on else nullcontext()


def native_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX); otherwise autocast bf16 is emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def atomic_write(path: Path, text: str) -> None:
    """Write to <name>.tmp beside it, then rename (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def count_ops(fn: Callable[[], object]) -> int:
    """Non-view aten ops dispatched by one call (on a GPU, each is at least one kernel launch)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += not func.is_view
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return Count.n


def count_flops(fn: Callable[[], object]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


# ---- 1. machine ------------------------------------------------------------------------------------------
def machine_start(args) -> dict:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "affinity": affinity,
            "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "loadavg_start": loadavg(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "python": platform.python_version(), "date": datetime.datetime.now().astimezone().isoformat("T", "seconds")}


def machine_md(m: dict) -> str:
    rows = [("CPU model (/proc/cpuinfo)", m["cpu_model"]), ("os.cpu_count()", m["cpu_count"]),
            ("len(os.sched_getaffinity(0))", m["affinity"]), ("torch", m["torch"]),
            ("torch.backends.cpu.get_cpu_capability()", m["cpu_capability"]),
            ("torch threads (this process)", m["threads"]), ("os.getloadavg() at start (1, 5, 15 min)",
                                                              m["loadavg_start"]),
            ("os.getloadavg() at end (1, 5, 15 min)", m.get("loadavg_end")),
            ("OMP_NUM_THREADS", m["OMP_NUM_THREADS"] or "unset"), ("OMP_WAIT_POLICY", m["OMP_WAIT_POLICY"] or "unset"),
            ("python", m["python"]), ("date", m["date"])]
    return table(["quantity", "value"], [(k, f"`{v}`" if k.startswith(("OMP", "torch.")) else v) for k, v in rows])


# ---- 2. conv peak ----------------------------------------------------------------------------------------
def conv_peak(args, ctx: dict) -> tuple[str, dict]:
    n, c, hw = (8 if args.quick else 64), 64, 32  # --quick: a smaller batch (emulated bf16 takes seconds a call)
    torch.manual_seed(0)
    conv, x = nn.Conv2d(c, c, 3, padding=1), torch.randn(n, c, hw, hw)
    flops = 2 * n * c * hw * hw * c * 9

    def run(bf16: bool) -> Callable[[], object]:
        def fn():
            with torch.no_grad(), bf16_ctx(bf16):
                return conv(x)
        return fn

    res = interleaved({"fp32": run(False), "bf16": run(True)}, args.reps)
    raw = {"flops": flops, "shape": f"Conv2d({c}->{c}, 3x3) on {n}x{c}x{hw}x{hw}"}
    rows = []
    for dtype, s in res.items():
        g = rate(s, flops / 1e9)
        raw[dtype] = {"s": s, "gflops": g}
        rows.append((dtype, fmt_range(scale(s, 1e3)), fmt_range(g)))
    md = (f"{raw['shape']}, forward only, {flops / 1e9:.2f} GFLOP per call (2·N·Cout·H·W·Cin·9), "
          f"{args.threads} thread(s). bf16 = `torch.autocast('cpu', dtype=torch.bfloat16)`. "
          + ("" if native_bf16() else "This CPU has no native bf16 (no `avx512_bf16`/`amx_bf16` flag in "
             "/proc/cpuinfo), so bf16 is converted/emulated and far slower than fp32; the bf16 'peak' is then only "
             "the reference the bf16 UNet rows are divided by, not a hardware peak.")
          + "\n\n" + table(["dtype", "ms/call, median (min–max)", "GFLOP/s, median (min–max)"], rows))
    return md, raw


# ---- 3. UNet ---------------------------------------------------------------------------------------------
class Row:
    """One measured configuration: an implementation, eager or compiled, fp32 or bf16 autocast."""

    def __init__(self, impl: str, ctor: U.Constructor, shape: tuple[int, int], batch: int, compiled: bool,
                 bf16: bool, foreach: bool = False) -> None:
        c, s = shape
        torch.manual_seed(0)
        self.impl, self.compiled, self.bf16 = impl, compiled, bf16
        self.label = (f"{impl} ({'compiled' if compiled else 'eager'}{', bf16 autocast' if bf16 else ''}"
                      f"{', foreach AdamW' if foreach else ''})")
        self.module = ctor(c, s)
        self.net = torch.compile(self.module) if compiled else self.module
        # torch's CPU default is the per-parameter AdamW; ldm's training builds it with foreach=True
        # (ldm.utils.config.build_optimizer: bit-identical updates, tests/test_speed.py)
        self.opt = torch.optim.AdamW(self.module.parameters(), lr=1e-3, foreach=foreach or None)
        g = torch.Generator().manual_seed(1)
        self.x, self.target = torch.randn(batch, c, s, s, generator=g), torch.randn(batch, c, s, s, generator=g)
        self.t = torch.randint(0, 1000, (batch,), generator=g)

    def forward_backward(self) -> None:
        """forward, MSE to a fixed target, backward (gradients of the previous step dropped first)."""
        self.opt.zero_grad(set_to_none=True)
        with bf16_ctx(self.bf16):
            loss = F.mse_loss(U.output(self.net(self.x, self.t)).float(), self.target)
        loss.backward()

    def train_step(self) -> None:
        """forward, MSE to a fixed target, backward, AdamW step."""
        self.forward_backward()
        self.opt.step()

    def infer(self) -> None:
        with torch.no_grad(), bf16_ctx(self.bf16):
            U.output(self.net(self.x, self.t))


def unet_section(args, ctx: dict) -> tuple[str, dict]:
    if args.quick or os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return _unet_section(args, ctx)
    # a fresh inductor cache, so that "cold compile" is cold (not served from an earlier run's cache)
    with tempfile.TemporaryDirectory(prefix="bench_inductor_") as d:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = d
        try:
            return _unet_section(args, ctx)
        finally:
            del os.environ["TORCHINDUCTOR_CACHE_DIR"]


def _unet_section(args, ctx: dict) -> tuple[str, dict]:
    impls = U.unets()
    raw: dict = {"batch": args.batch, "shapes": {}, "params": {}, "equivalence": {},
                 "before_is_ours": U.before_is_ours() if {"before", "ours"} <= set(impls) else None}
    conv = ctx.get("conv")
    peak = {False: conv["fp32"]["gflops"]["median"], True: conv["bf16"]["gflops"]["median"]} if conv else None
    train_rows, infer_rows, compile_rows, flop_rows = [], [], [], []
    for shape_name, shape in U.SHAPES.items():
        c, s = shape
        # parameters and numerical equivalence with the baseline (fresh instances: the check overwrites weights)
        for name, ctor in impls.items():
            raw["params"].setdefault(name, {})[shape_name] = U.count_params(ctor(c, s))
            if name != U.BASELINE:
                try:
                    eq = U.max_output_difference(ctor(c, s), impls[U.BASELINE](c, s), c, s)
                except Exception as e:  # a rewrite whose layout the weight mapping does not know
                    eq = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"}
                raw["equivalence"].setdefault(name, {})[shape_name] = eq
        rows = [Row(name, ctor, shape, args.batch, False, False) for name, ctor in impls.items()]
        rows += [Row(name, impls[name], shape, args.batch, False, False, foreach=True)
                 for name in FOREACH if name in impls]
        if not args.quick:
            if native_bf16():  # emulated bf16 is ~50x slower than fp32 (section 2): minutes per row, no information
                rows += [Row(name, impls[name], shape, args.batch, False, True) for name in BF16 if name in impls]
            rows += [Row(name, impls[name], shape, args.batch, True, False, foreach=True)
                     for name in COMPILED if name in impls]
        # FLOPs of one train step and one forward, counted on a batch of COUNT_BATCH and scaled to the batch (every
        # counted op is linear in the batch); all implementations compute the same function, so the largest count
        # (the one that sees every matmul) is the model's FLOPs for every row. Op counts do not depend on the batch.
        counts, ops = {}, {}
        for name, ctor in impls.items():
            r = Row(name, ctor, shape, COUNT_BATCH, False, False)
            k = args.batch / COUNT_BATCH
            counts[name] = {"train": int(count_flops(r.train_step) * k), "infer": int(count_flops(r.infer) * k)}
            ops[name] = count_ops(r.forward_backward)
        flops = {k: max(v[k] for v in counts.values()) for k in ("train", "infer")}
        sr = raw["shapes"][shape_name] = {"shape": f"{c}x{s}x{s}", "flops_counted": counts, "flops": flops,
                                          "aten_ops_per_train_step": ops, "rows": {}}
        for impl, v in counts.items():
            flop_rows.append((f"{c}x{s}x{s}", impl, fmt(v["train"] / 1e9, 4), fmt(v["infer"] / 1e9, 4), ops[impl]))
        for r in rows:  # the cold compile: first train step and first forward, timed once
            if r.compiled:
                try:
                    t0 = time.perf_counter()
                    r.train_step()
                    t1 = time.perf_counter()
                    r.infer()
                    cold = {"train_s": t1 - t0, "infer_s": time.perf_counter() - t1}
                except Exception as e:
                    cold = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"}
                sr["rows"][r.label] = {"cold_compile": cold}
        failed = [r for r in rows if "error" in sr["rows"].get(r.label, {}).get("cold_compile", {})]
        rows = [r for r in rows if r not in failed]
        fns = {f"{r.label}/train": r.train_step for r in rows}
        fns.update({f"{r.label}/infer": r.infer for r in rows})
        res = interleaved(fns, args.reps)
        base = {m: res[f"{U.BASELINE} (eager)/{m}"]["median"] for m in ("train", "infer")}
        for r in rows:
            out = sr["rows"].setdefault(r.label, {})
            for mode, dst in (("train", train_rows), ("infer", infer_rows)):
                sec = res[f"{r.label}/{mode}"]
                gf = rate(sec, flops[mode] / 1e9)
                pct = 100 * gf["median"] / peak[r.bf16] if peak else None
                out[mode] = {"s": sec, "samples_per_s": rate(sec, args.batch), "gflops": gf, "pct_peak": pct,
                             "vs_baseline": sec["median"] / base[mode]}
                dst.append((f"{c}x{s}x{s}", r.label, fmt_range(scale(sec, 1e3)), fmt(args.batch / sec["median"]),
                            fmt(sec["median"] / base[mode]), fmt(gf["median"]), fmt(pct, 2)))
            if r.compiled:
                cold = out["cold_compile"]
                compile_rows.append((f"{c}x{s}x{s}", r.label, fmt(cold["train_s"]), fmt(cold["infer_s"]),
                                     fmt_range(scale(out["train"]["s"], 1e3))))
        compile_rows += [(f"{c}x{s}x{s}", r.label, "failed", sr["rows"][r.label]["cold_compile"]["error"], "")
                         for r in failed]
    md = unet_md(args, raw, peak, train_rows, infer_rows, compile_rows, flop_rows)
    if "ours" in impls:
        raw["stacked_seeds"] = stacked_seeds(args)
        st = raw["stacked_seeds"]
        md += ("\n\n**Seeds stacked in one process** (`torch.func.stack_module_state` + `vmap(grad(...))`: the "
               f"{st['k']} seeds of a row as one batched computation, an idea for filling the machine with small "
               f"latents) vs the same {st['k']} models stepped one after another; forward + backward, batch "
               f"{args.batch} per model, {st['shape']}, {args.threads} thread(s); gradients agree to "
               f"{st['max_grad_diff']:.1e}:\n\n"
               + table(["way", f"ms for {st['k']} models' fwd+bwd, median (min–max)", "time ÷ one after another"],
                       [(k, fmt_range(scale(v, 1e3)), fmt(v["median"] / st["rows"]["one after another"]["median"]))
                        for k, v in st["rows"].items()]))
    return md, raw


def stacked_seeds(args, k: int = 3) -> dict:
    """K UNets' gradients as one vmapped computation vs K separate forward + backward passes (latent shape)."""
    from torch.func import functional_call, grad, stack_module_state, vmap

    c, s = U.SHAPES["latent"]
    torch.manual_seed(0)
    models = [U.our_unet(c, s) for _ in range(k)]
    for m in models:  # randomise the zero-initialised layers, so every gradient is non-trivial
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.05)
    params, buffers = stack_module_state(models)
    skeleton = U.our_unet(c, s).to("meta")
    g = torch.Generator().manual_seed(1)
    x, target = torch.randn(k, args.batch, c, s, s, generator=g), torch.randn(k, args.batch, c, s, s, generator=g)
    t = torch.randint(0, 1000, (k, args.batch), generator=g)

    def loss(p, b, x, t, target):
        return F.mse_loss(functional_call(skeleton, (p, b), (x, t)), target)

    batched = vmap(grad(loss))

    def stacked():
        return batched(params, buffers, x, t, target)

    def separate():
        for i, m in enumerate(models):
            m.zero_grad(set_to_none=True)
            F.mse_loss(m(x[i], t[i]), target[i]).backward()

    with warnings.catch_warnings():  # vmap's "no batching rule for the CPU flash-attention kernel" warning
        warnings.simplefilter("ignore")
        grads = stacked()
        separate()
        diff = max((grads[n][i] - p.grad).abs().max().item() for i, m in enumerate(models)
                   for n, p in m.named_parameters())
        res = interleaved({"stacked (vmap)": stacked, "one after another": separate}, args.reps)
    return {"k": k, "shape": f"{c}x{s}x{s}", "max_grad_diff": diff, "rows": res}


def unet_md(args, raw, peak, train_rows, infer_rows, compile_rows, flop_rows) -> str:
    names = list(raw["params"])
    base = raw["params"][U.BASELINE]
    prow = []
    for name in names:
        eq = raw["equivalence"].get(name, {})
        cells = [name]
        for shape_name in U.SHAPES:
            n = raw["params"][name][shape_name]
            cells.append(f"{n:,} ({n - base[shape_name]:+,})")
        for shape_name in U.SHAPES:
            e = eq.get(shape_name)
            cells.append("—" if e is None else e.get("error") or
                         f"{e['max_abs_diff']:.1e} (output RMS {e['output_rms']:.2f})")
        prow.append(cells)
    shapes = [f"{c}x{s}x{s}" for c, s in U.SHAPES.values()]
    hdr_eq = [f"max abs output diff vs {U.BASELINE}, {sh}" for sh in shapes]
    peak_txt = (f"fp32 {fmt(peak[False])} GFLOP/s, bf16 {fmt(peak[True])} GFLOP/s (section 2)" if peak
                else "n/a (run the conv section)")
    same = ("**`before` and `ours` are the same code now** (ldm/nets/unet.py is unchanged since the frozen copy): "
            "the gap between their rows is this run's noise." if raw.get("before_is_ours") else "")
    parts = [
        f"Config: conf/diffusion/unet_s.yaml (`{U.UNET_S}`) vs `diffusers.UNet2DModel` with the equal settings listed "
        "in benchmarks/unets.py. Batch "
        f"{args.batch}, {args.threads} thread(s). Train step = forward, MSE to a fixed target, backward, AdamW step "
        "(torch's default AdamW, per-parameter on CPU, unless the row says `foreach AdamW`: the multi-tensor AdamW "
        "ldm's training uses, bit-identical updates; `ours (eager, foreach AdamW)` is ldm's default stage-2 path); "
        "inference = one forward under `torch.no_grad()`. Ratios are time ÷ the same mode's "
        f"`{U.BASELINE} (eager)` time (< 1: faster than diffusers). % of peak: fp32 rows against the fp32 conv "
        f"peak, bf16 rows against the bf16 peak: {peak_txt}. {same}",
        "**Parameters and equivalence** (ours' weights copied into diffusers, random inputs; differences at float "
        "rounding mean the two compute the same function):",
        table(["implementation"] + [f"params, {sh} (Δ vs {U.BASELINE})" for sh in shapes] + hdr_eq, prow),
        "**Train step**:",
        table(["shape", "row", "ms/step, median (min–max)", "samples/s", f"time ÷ {U.BASELINE} eager", "GFLOP/s",
               "% of conv peak"], train_rows),
        "**Inference (forward only)**:",
        table(["shape", "row", "ms/forward, median (min–max)", "samples/s", f"time ÷ {U.BASELINE} eager", "GFLOP/s",
               "% of conv peak"], infer_rows),
    ]
    if compile_rows:
        parts += ["**torch.compile** (default mode; cold = first call in this process with an empty inductor "
                  "cache, compilation included, timed once; steady state = the interleaved median above):",
                  table(["shape", "row", "cold compile: first train step (s)", "first forward (s)",
                         "steady train ms/step"], compile_rows)]
    else:
        parts.append("torch.compile and bf16-autocast rows: skipped (--quick).")
    if not args.quick and not native_bf16():
        parts.append("bf16-autocast UNet rows: skipped, this CPU has no native bf16 (section 2: emulated bf16 runs "
                     "far slower than fp32, so a bf16 row would take minutes and show only that).")
    parts += [
        "**FLOPs counted** (`torch.utils.flop_counter.FlopCounterMode`, one call; the GFLOP/s above use the "
        "largest count per shape for every row, since all rows compute the same function: FlopCounterMode has no "
        "formula for the CPU flash-attention kernel diffusers' and ours' SDPA calls take, while `before`'s call "
        "falls back to the math path whose bmm it counts). aten ops = non-view ops dispatched by forward + "
        "backward (the optimizer excluded: on a GPU AdamW runs as a few foreach kernels), a floor on GPU kernel "
        "launches used in section 6:",
        table(["shape", "implementation", "GFLOP / train step", "GFLOP / forward", "aten ops / fwd+bwd"],
              flop_rows),
        "**Structural differences that remain** (none changes the parameter count or the function):\n"
        "- Attention projections: ours is one 1x1 `Conv2d(C, 3C)` for q, k, v and a 1x1 conv out; diffusers uses "
        "three `Linear(C, C)` (`to_q/to_k/to_v`) and a `Linear` out on the (B, HW, C) token layout. Same "
        "parameters (the 1x1 conv weight splits into the three Linear weights).\n"
        "- SDPA inputs: `before` passed q, k, v as strided views (`reshape(...).transpose(-1, -2)`, last-dim stride "
        "HW), which sends CPU SDPA to the math fallback (bmm + softmax); ours now applies the projections as "
        "matmuls on the (B, HW, C) token layout, so, as in diffusers, q, k, v have a contiguous last dimension and "
        "take `_scaled_dot_product_flash_attention_for_cpu`.\n"
        "- diffusers divides every ResNet and attention output by `output_scale_factor` (1.0), casts the attention "
        "output with `.to(query.dtype)`, and calls `.contiguous()` on the shortcut input while training: extra "
        "no-op kernels.\n"
        "- diffusers' mid-block attention has a GroupNorm only when `attn_norm_num_groups` is set (with "
        "`resnet_time_scale_shift='scale_shift'` it defaults to none): set to 32 here, which closes the 128-"
        "parameter gap (64 weights + 64 biases) of the earlier comparison.\n"
        "- Initialisation differs (ours zero-initialises each residual branch's last conv, the attention output "
        "and conv_out); irrelevant to speed, and the equivalence check copies weights.",
    ]
    return "\n\n".join(parts)


# ---- 4. jobs ---------------------------------------------------------------------------------------------
def run_job(args, row: str, steps: int) -> dict:
    """One real training run as a subprocess in a temporary run directory; metrics.json plus the wall time."""
    with tempfile.TemporaryDirectory(prefix=f"bench_{row}_") as d:
        cmd = [sys.executable, "train.py", f"autoencoder={row}", f"stage1.max_steps={steps}",
               f"stage2.max_steps={steps}", f"stage1.val_every={steps}", f"stage2.val_every={steps}", "logger=none",
               "cache.stage1=false", "cache.stage2=false", f"threads={args.threads}",
               f"metrics.num_samples={args.job_samples}", f"hydra.run.dir={d}"]
        cmd += ["stage2.batch_size=32"] if args.quick else []  # --quick: the pixel row's stage 2 dominates
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        out = {"cmd": shlex.join(cmd[1:]), "total_s": wall, "returncode": proc.returncode}
        metrics_file = Path(d) / "metrics.json"
        if proc.returncode != 0 or not metrics_file.exists():
            out["error"] = (proc.stderr or proc.stdout)[-800:]
            return out
        m = json.loads(metrics_file.read_text())
    keys = ("stage1/wall_s", "stage1/steps", "stage1/source", "stage2/wall_s", "stage2/steps", "stage2/source",
            "eval/wall_s", "gen/sec_per_sample", "runtime/threads", "runtime/omp_wait_policy")
    out.update({k: m.get(k) for k in keys})
    # every stage must have been trained by this run, never taken from a cache or a checkpoint
    allowed = {"stage1": ("trained", "none"), "stage2": ("trained",)}  # none: identity has no stage 1
    bad = [f"{st}/source={m.get(f'{st}/source')}" for st, ok in allowed.items() if m.get(f"{st}/source") not in ok]
    if bad:
        out["error"] = "not trained by this run: " + ", ".join(bad)
    return out


def jobs_section(args, ctx: dict) -> tuple[str, dict]:
    steps = 20 if args.quick else 200
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True)  # warm the file caches
    raw: dict = {"steps": steps, "reps": args.job_reps, "num_samples": args.job_samples,
                 "help_s": time.perf_counter() - t0, "runs": {r: [] for r in JOB_ROWS}}
    for _ in range(args.job_reps):  # interleaved: vae, identity, vae, identity, ...
        for row in JOB_ROWS:
            raw["runs"][row].append(run_job(args, row, steps))
    thr_rows, split_rows, errors = [], [], []
    for row, runs in raw["runs"].items():
        ok = [r for r in runs if "error" not in r]
        errors += [f"- `{row}`: {r['error'].strip()[-400:]}" for r in runs if "error" in r]
        if not ok:
            thr_rows.append((row, "failed", "", "", ""))
            continue
        tot = summarize([r["total_s"] for r in ok])
        parts = {p: summarize([r[f"{p}/wall_s"] or 0.0 for r in ok]) for p in ("stage1", "stage2", "eval")}
        other = summarize([r["total_s"] - sum(r[f"{p}/wall_s"] or 0.0 for p in ("stage1", "stage2", "eval"))
                           for r in ok])
        sps = {p: (summarize([r[f"{p}/steps"] / r[f"{p}/wall_s"] for r in ok]) if ok[0][f"{p}/steps"] else None)
               for p in ("stage1", "stage2")}
        gen = summarize([r["gen/sec_per_sample"] for r in ok])
        raw.setdefault("summary", {})[row] = {"total_s": tot, **{f"{p}_s": v for p, v in parts.items()},
                                              "other_s": other, "stage1_steps_per_s": sps["stage1"],
                                              "stage2_steps_per_s": sps["stage2"], "gen_sec_per_sample": gen,
                                              "sources": [(r["stage1/source"], r["stage2/source"]) for r in ok]}
        thr_rows.append((row, fmt_range(sps["stage1"]) if sps["stage1"] else "— (no stage 1)",
                         fmt_range(sps["stage2"]), fmt_range(gen, 3), f"{len(ok)}/{len(runs)}"))

        def pc(s: dict) -> str:
            return f"{fmt_range(s)} · {100 * s['median'] / tot['median']:.0f}%"
        split_rows.append((row, fmt_range(tot), pc(parts["stage1"]), pc(parts["stage2"]), pc(parts["eval"]),
                           pc(other)))
    src = ", ".join(f"{row}: stage1={s[0]}, stage2={s[1]}" for row in raw.get("summary", {})
                    for s in raw["summary"][row]["sources"][:1])
    md = [f"Real runs, one subprocess each: `python train.py autoencoder=<row> stage1.max_steps={steps} "
          f"stage2.max_steps={steps} stage1.val_every={steps} stage2.val_every={steps} logger=none "
          f"cache.stage1=false cache.stage2=false threads={args.threads} metrics.num_samples={args.job_samples} "
          f"hydra.run.dir=<tmp>{' stage2.batch_size=32' if args.quick else ''}`, {args.job_reps} rep(s) per row, "
          "rows interleaved, after one `train.py --help` "
          f"({raw['help_s']:.1f} s) to warm the caches. Steps/s = steps ÷ the stage's `wall_s` from metrics.json "
          "(the stage's fit, its validation and figures included). Every stage was trained by the run itself "
          f"(`<stage>/source`: {src or 'n/a'}; identity has no stage 1).",
          table(["row", "stage-1 steps/s", "stage-2 steps/s", "sampler s/sample (gen/sec_per_sample)", "runs ok"],
                thr_rows),
          "**Per-job wall time** (s, median (min–max) · share of the total); start-up+other = total − (stage 1 + "
          "stage 2 + eval): interpreter and imports, config, data, encoding the latents, checkpoint copies, exit.",
          table(["row", "total (s)", "stage 1 (s)", "stage 2 (s)", "eval (s)", "start-up+other (s)"], split_rows)]
    if errors:
        md.append("**Failed runs**:\n" + "\n".join(errors))
        raw["failed"] = True
    return "\n\n".join(md), raw


# ---- 5. contention ---------------------------------------------------------------------------------------
def contention_measure(worker: str, env: dict, opts: list[str], timeout: float) -> dict:
    """One worker run: the median of its timed steps. The deadline `timeout` counts from the worker's first line
    (printed once torch is imported and the model built, so a slow import under load does not eat it); at the
    deadline the worker is killed and what finished counts: with no timed step the warm-up step stands in, and
    with none at all the time is censored (at least `timeout`)."""
    import queue
    import threading

    proc = subprocess.Popen([sys.executable, worker, "train", "--threads", "2", *opts], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout] + [lines.put(None)], daemon=True).start()
    got, deadline, timed_out = [], time.monotonic() + 300.0, False  # 300 s: the import itself
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            timed_out = True
            break
        if line is None:
            break
        if not got:
            deadline = time.monotonic() + timeout
        got.append(json.loads(line))
    proc.kill()
    proc.wait()
    if not timed_out and proc.returncode != 0:
        raise RuntimeError(f"contention worker failed: {proc.stderr.read()[-500:]}")
    proc.stdout.close()
    proc.stderr.close()
    steps = [x["step"] for x in got if "step" in x]
    warm = [x["warmup"] for x in got if "warmup" in x]
    if steps:
        return {"step_s": summarize(steps)["median"], "steps": len(steps), "censored": False, "timed_out": timed_out}
    if warm:
        return {"step_s": warm[0], "steps": 0, "censored": False, "timed_out": timed_out, "from_warmup": True}
    return {"step_s": timeout, "steps": 0, "censored": True, "timed_out": True}


def contention_section(args, ctx: dict) -> tuple[str, dict]:
    worker = str(ROOT / "benchmarks" / "workers.py")
    # --quick: a quarter of the batch and a deadline per measurement (spin-waiting beside load takes s per step)
    seconds, min_steps, max_seconds, batch, timeout = ((0.5, 2, 1.0, 32, 3.0) if args.quick
                                                       else (4.0, 5, 30.0, 128, 120.0))
    opts = ["--seconds", str(seconds), "--min-steps", str(min_steps), "--max-seconds", str(max_seconds),
            "--batch", str(batch)]
    variants = [(policy, busy) for policy in ("unset", "PASSIVE") for busy in (False, True)]
    runs: dict = {v: [] for v in variants}
    # the busy process: started once, frozen (SIGSTOP: no CPU) between the measurements that want it
    hog = subprocess.Popen([sys.executable, worker, "busy"], env={**os.environ, "OMP_NUM_THREADS": "1"},
                           stdout=subprocess.PIPE, text=True)
    try:
        hog.stdout.readline()  # "ready": torch imported, the loop starts
        hog.send_signal(signal.SIGSTOP)
        for _ in range(args.reps):
            for policy, busy in variants:
                env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
                env["OMP_NUM_THREADS"] = "2"
                if policy != "unset":
                    env["OMP_WAIT_POLICY"] = policy
                load = (loadavg() or [None])[0]
                if busy:
                    hog.send_signal(signal.SIGCONT)
                try:
                    r = contention_measure(worker, env, opts, timeout)
                finally:
                    if busy:
                        hog.send_signal(signal.SIGSTOP)
                runs[(policy, busy)].append({**r, "loadavg_1min_before": load})
    finally:
        hog.kill()
        hog.wait()
    raw: dict = {"seconds": seconds, "min_steps": min_steps, "max_seconds": max_seconds, "batch": batch,
                 "timeout_s": timeout, "variants": {f"{p}/{'busy' if b else 'alone'}": r for (p, b), r in runs.items()}}
    rows, censored_any = [], False
    for policy in ("unset", "PASSIVE"):
        alone, busy = runs[(policy, False)], runs[(policy, True)]
        a, b = summarize([r["step_s"] for r in alone]), summarize([r["step_s"] for r in busy])
        ratios = summarize([y["step_s"] / x["step_s"] for x, y in zip(alone, busy)])
        ca, cb = any(r["censored"] for r in alone), any(r["censored"] for r in busy)
        censored_any |= ca or cb
        raw[f"{policy}/slowdown"] = {**ratios, "censored_alone": ca, "censored_busy": cb}
        la = [r["loadavg_1min_before"] for r in alone + busy if r["loadavg_1min_before"] is not None]
        ratio = b["median"] / a["median"]
        bound = "≥ " if cb and not ca else "≤ " if ca and not cb else "~" if ca and cb else ""
        rows.append((f"`{policy}`", ("≥ " if ca else "") + fmt_range(scale(a, 1e3)),
                     ("≥ " if cb else "") + fmt_range(scale(b, 1e3)),
                     f"{bound}{fmt(ratio)}× ({fmt(ratios['min'])}–{fmt(ratios['max'])})",
                     "no" if ratio > 2 and not ca else "yes" if ratio <= 2 and not cb else "?",
                     f"{min(la):.1f}–{max(la):.1f}" if la else "n/a"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    loaded = any(r["loadavg_1min_before"] is not None and r["loadavg_1min_before"] >= cores - 0.5
                 for rs in runs.values() for r in rs)
    md = (f"Workload: our UNet's train step on the latent shape (batch {batch}), 2 threads, in a fresh subprocess "
          f"per measurement (OpenMP reads `OMP_WAIT_POLICY` when torch loads): the median of ≥ {min_steps} steps "
          f"and ≥ {seconds:g} s (at most {max_seconds:g} s) after a warm-up step, the process killed {timeout:g} s "
          "after its imports (then what finished counts; with no step finished, the time is shown as ≥ the "
          "deadline). Busy = a second process running a 1-thread torch matmul loop, resumed (SIGCONT) for the "
          f"measurement and frozen (SIGSTOP) otherwise. {args.reps} rep(s) of the 4 variants, interleaved; the "
          "slowdown range is over the per-rep ratios. Target: ≤ 2× (earlier measurement: 10–40× with 2 threads "
          "beside one busy process)."
          + (f" **Caution**: the 1-minute load average was near or above {cores} (this process's CPUs) before "
             "some measurements: 'alone' was not alone (other processes on the machine), so the spin-waiting "
             "rows are slow already there and their ratio understates the slowdown." if loaded else "")
          + "\n\n"
          + table(["OMP_WAIT_POLICY", "alone ms/step", "beside busy ms/step", "slowdown (busy ÷ alone)", "≤ 2×",
                   "load avg (1 min) before runs"], rows))
    return md, raw


# ---- 6. planning -----------------------------------------------------------------------------------------
def plan_section(args, ctx: dict) -> tuple[str, dict]:
    s1_steps, s2_steps, jobs = args.plan
    unet = ctx["unet"]
    gpu_flops = GPU_PEAK_TFLOPS * 1e12 * GPU_UTIL
    jobs_raw = ctx.get("jobs", {}).get("summary", {})
    est: dict = {}
    for kind, shape_name in (("latent job (e.g. vae)", "latent"), ("pixel job (identity)", "pixel")):
        sh = unet["shapes"][shape_name]
        f_step = sh["flops"]["train"]
        ours = sh["rows"]["ours (eager)"]["train"]
        cpu_gflops = ours["gflops"]["median"]
        s2_cpu_h = s2_steps * f_step / (cpu_gflops * 1e9) / 3600
        launch_floor = sh["aten_ops_per_train_step"]["ours"] * GPU_LAUNCH_US * 1e-6
        gpu_step = max(f_step / gpu_flops, launch_floor)
        e = {"flops_per_step": f_step, "cpu_gflops": cpu_gflops, "stage2_cpu_h": s2_cpu_h,
             "gpu_step_s": gpu_step, "gpu_launch_floor_s": launch_floor, "stage2_gpu_h": s2_steps * gpu_step / 3600}
        if shape_name == "latent":
            vae = jobs_raw.get("vae")
            if vae and vae.get("stage1_steps_per_s"):  # stage 1 at the rate the real job measured
                s1_s_per_step = 1 / vae["stage1_steps_per_s"]["median"]
                e["stage1_cpu_h"] = s1_steps * s1_s_per_step / 3600
                # no FLOP count for the autoencoder: its GPU step costs what its CPU step costs relative to
                # the UNet's CPU train step (section 3)
                e["stage1_gpu_h"] = s1_steps * gpu_step * (s1_s_per_step / ours["s"]["median"]) / 3600
            else:
                e["stage1_cpu_h"] = e["stage1_gpu_h"] = None
        else:
            e["stage1_cpu_h"] = e["stage1_gpu_h"] = 0.0
        over = jobs_raw.get("vae" if shape_name == "latent" else "identity")
        e["overhead_cpu_h"] = (over["eval_s"]["median"] + over["other_s"]["median"]) / 3600 if over else None
        parts = [e["stage1_cpu_h"], e["stage2_cpu_h"], e["overhead_cpu_h"]]
        e["job_cpu_h"] = sum(parts) if None not in parts else None
        e["job_gpu_h"] = None if e["stage1_gpu_h"] is None else e["stage1_gpu_h"] + e["stage2_gpu_h"]
        est[kind] = e

    def h(x: float | None) -> str:
        return "n/a" if x is None else fmt(x, 3)

    lat = est["latent job (e.g. vae)"]
    rows = [
        ("GFLOP per stage-2 train step (counted, section 3)",
         *(fmt(e["flops_per_step"] / 1e9, 4) for e in est.values()), fmt(lat["flops_per_step"] / 1e9, 4)),
        ("CPU: achieved GFLOP/s, ours eager, 1 job", *(fmt(e["cpu_gflops"]) for e in est.values()),
         fmt(lat["cpu_gflops"])),
        (f"CPU core-hours, stage 1 ({s1_steps} steps, rate of the vae job in section 4)",
         *(h(e["stage1_cpu_h"]) for e in est.values()), h(_times(lat["stage1_cpu_h"], jobs))),
        (f"CPU core-hours, stage 2 ({s2_steps} steps)", *(h(e["stage2_cpu_h"]) for e in est.values()),
         h(lat["stage2_cpu_h"] * jobs)),
        ("CPU core-hours, eval + start-up (section 4, not scaled)", *(h(e["overhead_cpu_h"]) for e in est.values()),
         h(_times(lat["overhead_cpu_h"], jobs))),
        ("**CPU core-hours, total**", *(h(e["job_cpu_h"]) for e in est.values()), h(_times(lat["job_cpu_h"], jobs))),
        (f"GPU ms per stage-2 step = max(FLOPs ÷ {GPU_UTIL:.0%} of peak, aten ops × {GPU_LAUNCH_US:g} µs)",
         *(f"max({fmt(e['flops_per_step'] / gpu_flops * 1e3)}, {fmt(e['gpu_launch_floor_s'] * 1e3)}) = "
           f"{fmt(e['gpu_step_s'] * 1e3)}" for e in est.values()), ""),
        (f"GPU hours, stage 2 ({s2_steps} steps)", *(h(e["stage2_gpu_h"]) for e in est.values()),
         h(lat["stage2_gpu_h"] * jobs)),
        (f"**GPU hours, stages 1+2, one {GPU_NAME}** (estimate)", *(h(e["job_gpu_h"]) for e in est.values()),
         h(_times(lat["job_gpu_h"], jobs))),
    ]
    per_job = lat["job_cpu_h"]
    slurm = []
    if per_job is not None:
        for k in sorted({jobs, min(jobs, 32), min(jobs, 8)}, reverse=True):
            slurm.append((f"`--array=0-{jobs - 1}%{k}`", k, fmt(per_job, 3), fmt(math.ceil(jobs / k) * per_job, 3),
                          fmt(per_job * jobs, 3)))
    md = [f"Profile (`--plan {s1_steps},{s2_steps},{jobs}`): {s1_steps} stage-1 steps, {s2_steps} stage-2 steps, "
          f"{jobs} jobs. **Estimates, not measurements.** CPU: at this run's measured rates ({args.threads} thread per "
          f"job, so core-hours). GPU: ASSUMED {GPU_UTIL:.0%} of a {GPU_NAME}'s ~{GPU_PEAK_TFLOPS:g} TFLOP/s bf16 dense "
          f"peak (the H100/H200 SXM datasheet figure) = {gpu_flops / 1e12:.0f} TFLOP/s, but never faster than one "
          f"kernel launch (~{GPU_LAUNCH_US:g} µs, assumed) per aten op of the step: these UNets are so small that the "
          "launch floor, not the FLOPs, sets the GPU step time (pack several jobs per GPU, or use CUDA graphs / "
          "torch.compile, to get near the FLOP figure). Stage 1 has no FLOP count: its GPU step is the stage-2 "
          "GPU step × (the vae job's CPU s per stage-1 step, section 4 ÷ the UNet's CPU s per train step, section "
          "3). Stage-2 GPU steps use the batch of section 3. GPU hours leave out evaluation and start-up.",
          table(["quantity", *est.keys(), f"{jobs} latent jobs"], rows)]
    if slurm:
        md += [f"**SLURM array** of the {jobs} latent jobs, 1 CPU (`--cpus-per-task=1`, `threads=1`) per task; "
               "request `--time` ≈ 1.5× the per-task hours:",
               table(["array", "tasks at once", "hours per task", "wall hours, all tasks", "core-hours"], slurm)]
    return "\n\n".join(md), {"profile": {"stage1_steps": s1_steps, "stage2_steps": s2_steps, "jobs": jobs},
                             "assumptions": {"gpu": GPU_NAME, "gpu_peak_tflops_bf16_dense": GPU_PEAK_TFLOPS,
                                             "gpu_utilisation": GPU_UTIL, "gpu_launch_us_per_op": GPU_LAUNCH_US},
                             "estimates": est}


def _times(x: float | None, n: int) -> float | None:
    return None if x is None else x * n


# ---- driver ----------------------------------------------------------------------------------------------
RUNNERS = {"conv": conv_peak, "unet": unet_section, "jobs": jobs_section, "contention": contention_section,
           "plan": plan_section}
NEEDS = {"plan": ("unet",)}  # a section that needs another's numbers pulls it in


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run (< 3 min): 2 reps, short jobs, no compile/bf16")
    p.add_argument("--threads", type=int, default=1, help="torch threads here and per job (default 1)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "RESULTS.md", help="the markdown report")
    p.add_argument("--json", type=Path, default=None, help="raw numbers (default: results.json beside --out)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 5, --quick 2)")
    p.add_argument("--job-reps", type=int, default=None, help="reps of each real job in section 4 (default 3, "
                   "--quick 1: one job is minutes)")
    p.add_argument("--job-samples", type=int, default=None, help="metrics.num_samples of the jobs (180, --quick 36)")
    p.add_argument("--batch", type=int, default=128, help="UNet batch size (section 3)")
    p.add_argument("--plan", default="16000,16000,90", help="steps_stage1,steps_stage2,jobs for section 6")
    args = p.parse_args(argv)
    args.reps = args.reps or (2 if args.quick else 5)
    args.job_reps = args.job_reps or (1 if args.quick else 3)
    args.job_samples = args.job_samples or (36 if args.quick else 180)
    args.plan = [int(x) for x in args.plan.split(",")]
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(wanted) - set(SECTIONS)
    if unknown or len(args.plan) != 3:
        p.error(f"unknown sections {sorted(unknown)}" if unknown else "--plan needs steps_stage1,steps_stage2,jobs")
    for s in list(wanted):
        wanted += [n for n in NEEDS.get(s, ()) if n not in wanted]
    args.sections = [s for s in SECTIONS if s in wanted]
    return args


def command_line() -> str:
    exe = Path(sys.executable)
    try:
        exe = exe.relative_to(Path.cwd())
    except ValueError:
        pass
    return shlex.join([str(exe), *sys.argv])


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    json_path = args.json or args.out.with_name("results.json")
    machine = machine_start(args)
    ctx: dict = {}
    bodies: dict[str, str] = {}
    walls: dict[str, float] = {}
    failed = False
    for name in args.sections:
        if name == "machine":
            continue  # written at the end, with the load average then
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            bodies[name], ctx[name] = RUNNERS[name](args, ctx)
            failed |= bool(ctx[name].get("failed"))
        except Exception:
            failed = True
            tb = traceback.format_exc()
            print(tb, file=sys.stderr)
            bodies[name], ctx[name] = f"**Failed**:\n\n```\n{tb[-2000:]}\n```", {"error": tb}
        walls[name] = time.perf_counter() - t0
        print(f"[bench] {name}: {walls[name]:.1f} s", file=sys.stderr, flush=True)
    machine["loadavg_end"] = loadavg()
    total = time.perf_counter() - t_start
    if "machine" in args.sections:
        bodies["machine"], ctx["machine"], walls["machine"] = machine_md(machine), machine, 0.0
    lines = ["# Benchmarks", "",
             f"Command: `{command_line()}`  ",
             f"Total wall time: {total:.1f} s{' (--quick: not final numbers)' if args.quick else ''}  ",
             f"Date: {machine['date']}, load average at start {machine['loadavg_start']}, at end "
             f"{machine['loadavg_end']}", "",
             f"In-process numbers are **medians of {args.reps} interleaved repetitions in one process** (A,B,C,A,B,C,"
             "...; one untimed warm-up call each) with min–max beside them; section 4's jobs and section 5's "
             "workers are subprocesses, interleaved the same way. Raw numbers: "
             f"`{json_path.name}` beside this file.", ""]
    for i, name in enumerate(SECTIONS, 1):
        if name in args.sections:
            lines += [f"## {i}. {SECTIONS[name]}", "", bodies[name], "",
                      f"_Section wall time: {walls[name]:.1f} s._", ""]
    atomic_write(args.out, "\n".join(lines))
    atomic_write(json_path, json.dumps({"command": command_line(), "total_s": total, "quick": args.quick,
                                        "threads": args.threads, "reps": args.reps, "section_wall_s": walls,
                                        "results": ctx}, indent=1, default=str) + "\n")
    print(f"[bench] wrote {args.out} and {json_path} in {total:.1f} s", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
