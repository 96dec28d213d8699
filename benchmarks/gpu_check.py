"""The prepared GPU check (`make gpu-check`): what no CPU machine can tell, in one run of at most ~8 minutes on one
GPU. Writes benchmarks/GPU.md and benchmarks/gpu.json (atomically: an interrupted check leaves the last ones).

    python benchmarks/gpu_check.py [--budget-s 480] [--out benchmarks/GPU.md]
    python benchmarks/gpu_check.py --cpu-smoke --out /tmp/GPU.md   # the same script at toy sizes on the CPU (tests)

Sections, in order (each is skipped, and says so, when the time left cannot hold it):
1. machine: GPUs, CUDA and torch builds, bf16.
2. rows: a `debug=fast` run of every row family with `trainer=gpu` (vae, ae, vae_gan, bigan, ali, gan_inversion,
   identity, and diffusion=ddgan), then bf16-mixed and torch.compile on the vae row, then a 2-job sweep through
   `hydra/launcher=gpus +jobs_per_gpu=2`, which must place the jobs on distinct GPUs, or both on GPU 0 with
   `runtime/gpu_jobs` 1 and 2 when there is one.
3. reproducibility: under `trainer.deterministic=true`, stage 1 trained 8 batches straight vs 4 then resumed to 8
   must give bit-identical weights; `sample.py sampler_noise=device` twice must give the same bytes (and is
   compared with `sampler_noise=cpu`, which draws the CPU stream).
4. ddp: `trainer=ddp` on every visible GPU (vae and bigan) when there is more than one.
5. throughput: the stage-2 UNet's train step and sampling step (benchmarks/workers.py, the latent shape of the
   claims profiles' digits jobs) with 1, 4 and 8 processes on GPU 0 at once, eager and with
   `torch.compile(mode="reduce-overhead")` (CUDA graphs): steps/s summed over the processes.
6. plan: one real job (vae, 500 + 500 batches, evaluation included) gives this GPU's stage rates; with them the
   full claims profile's GPU-hours, at one job per GPU and at the best measured jobs-per-GPU speed-up.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench import atomic_write  # noqa: E402
from benchmarks.timing import fmt, table  # noqa: E402

ROWS = ("vae", "ae", "vae_gan", "bigan", "ali", "gan_inversion", "identity")
CONCURRENCY = (1, 4, 8)
MODES = ("none", "reduce-overhead")
PLAN_STEPS = 500
RUN_CAP_S = 120  # seconds for one train.py call of the rows section (twice that for the sweep of every row)


class Clock:
    def __init__(self, budget_s: float) -> None:
        self.start, self.budget = time.perf_counter(), budget_s

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)


def run(cmd: list[str], timeout: float, env: dict | None = None) -> tuple[int, str, float]:
    """(exit code, the output's tail, seconds); a timeout is exit code 124."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(1.0, timeout),
                           env={**os.environ, **(env or {})})
        return p.returncode, (p.stderr or p.stdout)[-600:], time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout:.0f} s", time.perf_counter() - t0


def machine(args) -> dict:
    import torch

    cuda = torch.cuda.is_available()
    gpus = [{"name": torch.cuda.get_device_name(i),
             "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2 ** 30, 1),
             "capability": ".".join(map(str, torch.cuda.get_device_capability(i)))}
            for i in range(torch.cuda.device_count())] if cuda else []
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
            "cuda": torch.version.cuda, "gpus": gpus, "bf16": bool(cuda and torch.cuda.is_bf16_supported()),
            "cpus": os.cpu_count(), "python": platform.python_version(), "cpu_smoke": args.cpu_smoke,
            "command": shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}


def sweep_statuses(sweep: Path, common: int = 0) -> list[dict]:
    """Each job's status, GPU and training seconds; `overrides`: the job's own, after the `common` shared ones."""
    import yaml

    out = []
    for m in sorted(sweep.glob("*/metrics.json"), key=lambda p: int(p.parent.name)):
        d = json.loads(m.read_text())
        overrides = m.parent / ".hydra" / "overrides.yaml"
        own = (yaml.safe_load(overrides.read_text()) or [])[common:] if overrides.exists() else []
        out.append({"job": m.parent.name, "overrides": " ".join(own),
                    "status": d.get("status"), "error": d.get("error"), "gpu": d.get("runtime/gpu"),
                    "gpu_jobs": d.get("runtime/gpu_jobs"),
                    "train_s": sum(d.get(f"stage{k}/wall_s") or 0 for k in (1, 2))})
    return out


def rows_section(args, clock: Clock, tmp: Path) -> dict:
    trainer = "trainer=cpu" if args.cpu_smoke else "trainer=gpu"
    base = [sys.executable, "train.py", "-m", "debug=fast", "logger=none", trainer, "cache.stage1=false",
            "cache.stage2=false", f"paths.log_dir={tmp}/logs"]
    runs = {"rows": [f"autoencoder={','.join(args.rows)}"], "ddgan": ["diffusion=ddgan"],
            "bf16-mixed": ["trainer.precision=bf16-mixed"], "compile": ["compile.stage1=true", "compile.stage2=true"],
            "placement": ["hydra/launcher=gpus", "+jobs_per_gpu=2", "seed=0,1"]}
    if args.cpu_smoke:  # a cold inductor compile takes many minutes on a small CPU: nothing to learn there
        runs.pop("compile")
    out = {}
    for name, extra in runs.items():
        if clock.left() < 30:
            out[name] = {"skipped": "time budget"}
            continue
        sweep = tmp / "sweeps" / name
        cap = RUN_CAP_S * (2 if name == "rows" else 1)  # one stuck run cannot eat the whole check
        code, tail, wall = run([*base, *extra, f"hydra.sweep.dir={sweep}"], min(clock.left() - 20, cap))
        jobs = sweep_statuses(sweep, len(base) - 3)  # the job's overrides after the common ones
        ok = code == 0 and bool(jobs) and all(j["status"] == "ok" for j in jobs)
        out[name] = {"exit": code, "wall_s": wall, "jobs": jobs, "ok": ok, "tail": "" if ok else tail}
    place = out.get("placement", {})
    if place.get("jobs"):
        gpus = max(1, len(args.machine["gpus"]))
        seen = sorted((j["gpu"], j["gpu_jobs"]) for j in place["jobs"])
        want = [(0, 1), (1, 1)] if gpus > 1 else [(0, 1), (0, 2)]
        place["placed_as_expected"] = args.cpu_smoke or seen == want
        place["ok"] = place["ok"] and place["placed_as_expected"]
    return out


def same_weights(a: Path, b: Path) -> tuple[bool, int]:
    """Whether two checkpoints hold bit-identical tensors under the same names; (equal, how many differ)."""
    import torch

    sa = torch.load(a, map_location="cpu", weights_only=False)["state_dict"]
    sb = torch.load(b, map_location="cpu", weights_only=False)["state_dict"]
    differ = sum(1 for k in sa.keys() | sb.keys() if k not in sa or k not in sb or not torch.equal(sa[k], sb[k]))
    return differ == 0, differ


def repro_section(args, clock: Clock, tmp: Path) -> dict:
    """Bit-identical resume under trainer.deterministic=true, and device-side sampling noise (same seed, same
    bytes; the CPU stream beside it)."""
    if clock.left() < 120:
        return {"skipped": "time budget"}
    trainer = "trainer=cpu" if args.cpu_smoke else "trainer=gpu"
    base = [sys.executable, "train.py", "debug=fast", "logger=none", trainer, "trainer.deterministic=true",
            "cache.stage1=false", "cache.stage2=false", f"paths.log_dir={tmp}/logs"]
    runs = {"straight": ["stage1.max_steps=8"], "half": ["stage1.max_steps=4", "stage=stage1"],
            "resumed": ["stage1.max_steps=8", f"ckpt_path={tmp}/repro/half/checkpoints/stage1/last.ckpt"]}
    out: dict = {"runs": {}}
    for name, extra in runs.items():
        code, tail, wall = run([*base, *extra, f"hydra.run.dir={tmp}/repro/{name}"], min(clock.left() - 20, RUN_CAP_S))
        out["runs"][name] = {"exit": code, "wall_s": wall, "tail": "" if code == 0 else tail}
        if code != 0:
            out["ok"] = False
            return out
    ckpt = "checkpoints/stage1/last.ckpt"
    out["resume_identical"], out["resume_differing_tensors"] = same_weights(tmp / "repro/straight" / ckpt,
                                                                            tmp / "repro/resumed" / ckpt)
    npz = {}
    for name, noise in (("device_a", "device"), ("device_b", "device"), ("cpu", "cpu")):
        code, tail, wall = run([sys.executable, "sample.py", f"run_dir={tmp}/repro/straight", "num_samples=16",
                                f"sampler_noise={noise}", f"out_dir={tmp}/repro/samples_{name}",
                                f"hydra.run.dir={tmp}/repro/sample_{name}"], min(clock.left() - 10, RUN_CAP_S))
        out["runs"][f"sample_{name}"] = {"exit": code, "wall_s": wall, "tail": "" if code == 0 else tail}
        if code != 0:
            out["ok"] = False
            return out
        npz[name] = (tmp / f"repro/samples_{name}/samples.npz").read_bytes()
    out["device_noise_reproducible"] = npz["device_a"] == npz["device_b"]
    out["device_equals_cpu_stream"] = npz["device_a"] == npz["cpu"]  # True on a CPU; on a GPU another stream
    out["ok"] = out["resume_identical"] and out["device_noise_reproducible"]
    return out


def ddp_section(args, clock: Clock, tmp: Path) -> dict:
    n = len(args.machine["gpus"])
    if n < 2:
        return {"skipped": f"{n} GPU visible: DDP needs 2 or more"}
    if clock.left() < 60:
        return {"skipped": "time budget"}
    sweep = tmp / "sweeps" / "ddp"
    code, tail, wall = run([sys.executable, "train.py", "-m", "debug=fast", "logger=none", "trainer=ddp",
                            f"trainer.devices={n}", f"paths.log_dir={tmp}/logs", "autoencoder=vae,bigan",
                            f"hydra.sweep.dir={sweep}"], min(clock.left() - 20, 2 * RUN_CAP_S))
    jobs = sweep_statuses(sweep, 5)
    return {"devices": n, "exit": code, "wall_s": wall, "jobs": jobs, "tail": tail,
            "ok": code == 0 and bool(jobs) and all(j["status"] == "ok" for j in jobs)}


def throughput(args, k: int, mode: str, what: str, tmp: Path, timeout: float) -> dict:
    """k workers at once on GPU 0, timed together after each one's warm-up: steps/s summed over them."""
    go = tmp / f"go-{k}-{mode}-{what}"
    device = "cpu" if args.cpu_smoke else "cuda:0"
    cmd = [sys.executable, "benchmarks/workers.py", "train", "--threads", "1", "--seconds", str(args.seconds),
           "--min-steps", "3", "--max-seconds", str(timeout), "--batch", str(args.batch), "--device", device,
           "--compile", mode, "--what", what, "--go", str(go)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(k)]
    deadline = time.perf_counter() + timeout
    lines: list[list[dict]] = [[] for _ in procs]
    for i, p in enumerate(procs):  # each prints {"ready": true} after its warm-up
        while p.poll() is None and time.perf_counter() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            lines[i].append(json.loads(line))
            if lines[i][-1].get("ready"):
                break
    go.touch()
    out, errors = [], []
    for i, p in enumerate(procs):
        try:
            rest, err = p.communicate(timeout=max(1.0, deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            p.kill()
            rest, err = p.communicate()
        lines[i] += [json.loads(x) for x in rest.splitlines() if x.strip()]
        steps = [x["step"] for x in lines[i] if "step" in x]
        if p.returncode != 0 or not steps:
            errors.append(err[-300:] or f"exit {p.returncode}")
            continue
        out.append({"steps": len(steps), "s": sum(steps),
                    "warmup_s": next((x["warmup"] for x in lines[i] if "warmup" in x), None)})
    total = sum(w["steps"] / w["s"] for w in out) if len(out) == k else None
    return {"k": k, "mode": mode, "what": what, "steps_per_s": total, "workers": out, "errors": errors}


def throughput_section(args, clock: Clock, tmp: Path) -> dict:
    out: dict = {"batch": args.batch, "cells": []}
    modes = ("none",) if args.cpu_smoke else MODES  # reduce-overhead is CUDA graphs: nothing to measure on a CPU
    for mode in modes:
        for what in ("train", "sample"):
            for k in args.concurrency:
                need = 25 + args.seconds + (60 if mode != "none" else 0)
                if clock.left() < need + 40:  # keep time for the plan's real job
                    out["cells"].append({"k": k, "mode": mode, "what": what, "skipped": "time budget"})
                    continue
                out["cells"].append(throughput(args, k, mode, what, tmp, min(clock.left() - 40, need * 2)))
    return out


def plan_section(args, clock: Clock, tmp: Path, tput: dict) -> dict:
    """One real vae job at PLAN_STEPS + PLAN_STEPS batches: this GPU's stage rates, then the full profile priced."""
    if clock.left() < 45:
        return {"skipped": "time budget"}
    steps = args.plan_steps
    d = tmp / "plan"
    code, tail, wall = run([sys.executable, "train.py", "autoencoder=vae", "logger=none",
                            "trainer=cpu" if args.cpu_smoke else "trainer=gpu", f"stage1.max_steps={steps}",
                            f"stage2.max_steps={steps}", f"stage1.val_every={steps}", f"stage2.val_every={steps}",
                            "cache.stage1=false", "cache.stage2=false", f"paths.log_dir={tmp}/logs",
                            f"hydra.run.dir={d}", *(["debug=fast"] if args.cpu_smoke else [])], clock.left() - 5)
    if code != 0 or not (d / "metrics.json").exists():
        return {"exit": code, "tail": tail, "ok": False}
    m = json.loads((d / "metrics.json").read_text())
    s1, s2 = m["stage1/steps"], m["stage2/steps"]
    from ldm.analysis.claims import estimate, runner

    n = estimate.train_defaults()["metrics.num_samples"]  # the job ran the default metrics config
    gen_s = (m.get("gen/sec_per_sample") or 0) * n
    rates = {**estimate.RATES, "stage1_steps_per_s": s1 / m["stage1/wall_s"],
             "stage2_steps_per_s": s2 / m["stage2/wall_s"],
             "gen_sec_per_sample": m.get("gen/sec_per_sample") or 0.0,
             "fixed_s": max(0.0, wall - m["stage1/wall_s"] - m["stage2/wall_s"] - gen_s)}
    rates["pixel_stage2_steps_per_s"], rates["pixel_gen_sec_per_sample"] = rates["stage2_steps_per_s"], \
        rates["gen_sec_per_sample"]  # assumed: the pixel row is not measured here (its UNet is larger)
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        claims = OmegaConf.to_container(compose("evaluate", ["claims=full", f"paths.log_dir={tmp}/logs"]).claims,
                                        resolve=True)
    jobs = runner.jobs_of(claims)
    est = estimate.estimate_profile_s(jobs, 1, rates)
    one = sum(v for k, v in est.items() if k not in ("wall", "gpu_hours")) / 3600
    train1 = {c["k"]: c["steps_per_s"] for c in tput.get("cells", [])
              if c.get("what") == "train" and c.get("mode") == "none" and c.get("steps_per_s")}
    speedups = {k: v / train1[1] for k, v in train1.items() if 1 in train1}
    best = max(speedups, key=speedups.get) if speedups else 1
    return {"ok": True, "job": {"wall_s": wall, "stage1_steps": s1, "stage2_steps": s2, **rates},
            "profile_jobs": sum(len(estimate.expand(ov)) for ov in jobs.values()), "gpu_hours_one_per_gpu": one,
            "best_jobs_per_gpu": best, "speedup": speedups.get(best, 1.0),
            "gpu_hours_best": one / speedups.get(best, 1.0)}


def markdown(r: dict) -> str:
    m = r["machine"]
    gpus = ", ".join(f"{g['name']} ({g['memory_gib']} GiB, sm {g['capability']})" for g in m["gpus"]) or "none (CPU)"
    md = [f"# GPU check\n\nMade by `make gpu-check` (`{m['command']}`) on {m['date']}, in {fmt(r['wall_s'], 3)} s. "
          f"GPUs: {gpus}. torch {m['torch']}, CUDA {m['cuda']}, bf16: {m['bf16']}, {m['cpus']} CPUs."]
    if m["cpu_smoke"]:
        md.append("**CPU smoke run at toy sizes: it checks the script, and its numbers say nothing about a GPU.**")
    md.append("## 1. Every row family on the GPU\n\n`train.py -m debug=fast logger=none trainer=gpu cache.stage1=false "
              "cache.stage2=false` and each run's overrides; "
              "`placement` is a 2-job sweep through `hydra/launcher=gpus +jobs_per_gpu=2`.")
    rows = []
    for name, s in r["rows"].items():
        if "skipped" in s:
            rows.append((name, "", "skipped: " + s["skipped"], "", ""))
            continue
        for j in s["jobs"] or [{"overrides": "", "status": f"no job ran (exit {s['exit']})", "train_s": None,
                                "gpu": None, "gpu_jobs": None}]:
            rows.append((name, j["overrides"], j["status"] + (f": {j['error']}" if j.get("error")
                                                                                 else ""),
                         fmt(j["train_s"]), "" if j.get("gpu") is None else f"{j['gpu']} ({j['gpu_jobs']} jobs)"))
    md.append(table(["run", "overrides", "status", "train s", "runtime/gpu"], rows))
    q = r["repro"]
    if "skipped" in q or not q.get("runs") or "resume_identical" not in q:
        why = q.get("skipped") or next((f"{n} failed (exit {s['exit']}): {s['tail']}" for n, s in q["runs"].items()
                                        if s["exit"] != 0), "incomplete")
        md.append(f"## 2. Reproducibility\n\n{why}")
    else:
        md.append("## 2. Reproducibility\n\nUnder `trainer.deterministic=true` (with `CUBLAS_WORKSPACE_CONFIG` set by "
                  "the preflight), stage 1 trained 8 batches straight and 4 + a resume to 8: "
                  + ("**bit-identical weights**" if q["resume_identical"] else
                     f"**{q['resume_differing_tensors']} tensors differ**")
                  + ". `sample.py sampler_noise=device`, twice with the same seed: "
                  + ("**the same bytes**" if q["device_noise_reproducible"] else "**different bytes**")
                  + "; against `sampler_noise=cpu`: "
                  + ("the same samples (one generator kind: a CPU run)" if q["device_equals_cpu_stream"]
                     else "other samples (the device's own stream, as documented)") + ".")
    d = r["ddp"]
    md.append("## 3. DDP on every visible GPU\n\n" + (f"skipped: {d['skipped']}" if "skipped" in d else table(
        ["job", "status"], [(j["overrides"], j["status"] + (f": {j['error']}" if j.get("error")
                                                                              else "")) for j in d["jobs"]])))
    t = r["throughput"]
    cells = {(c["mode"], c["what"], c["k"]): c for c in t["cells"]}
    trows = []
    for (mode, what) in dict.fromkeys((c["mode"], c["what"]) for c in t["cells"]):
        vals = []
        for k in r["concurrency"]:
            c = cells.get((mode, what, k), {})
            vals.append("skipped" if "skipped" in c else ("failed" if not c.get("steps_per_s")
                                                          else fmt(c["steps_per_s"])))
        trows.append((f"{what}, compile={mode}", *vals))
    md.append(f"## 4. Jobs per GPU\n\nThe stage-2 UNet (latent 2x4x4, batch {t['batch']}): steps/s summed over k "
              "processes on GPU 0, timed together after each one's warm-up (benchmarks/workers.py).\n\n"
              + table(["workload", *(f"k={k}" for k in r["concurrency"])], trows))
    p = r["plan"]
    if p.get("ok"):
        j = p["job"]
        md.append(f"## 5. The full profile's GPU-hours, measured\n\nOne real job (`autoencoder=vae`, "
                  f"{j['stage1_steps']} + {j['stage2_steps']} batches, evaluation included) took {fmt(j['wall_s'])} s: "
                  f"stage 1 {fmt(j['stage1_steps_per_s'])} steps/s, stage 2 {fmt(j['stage2_steps_per_s'])} steps/s, "
                  f"{fmt(j['gen_sec_per_sample'])} s per sample, {fmt(j['fixed_s'])} s fixed. At these rates the full "
                  f"profile's {p['profile_jobs']} jobs take **{fmt(p['gpu_hours_one_per_gpu'])} GPU-hours** at one job "
                  f"per GPU, and **{fmt(p['gpu_hours_best'])}** at {p['best_jobs_per_gpu']} jobs per GPU (the train "
                  f"step's measured speed-up, {fmt(p['speedup'])}x). Every row is priced at the vae row's rates "
                  "(GAN rows' stage 1 at the CPU-measured cost ratios of ldm/analysis/claims/estimate.py).")
    else:
        md.append("## 5. The full profile's GPU-hours\n\n" + (f"skipped: {p['skipped']}" if "skipped" in p
                                                             else f"the real job failed (exit {p.get('exit')})"))
    return "\n\n".join(md) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-s", type=float, default=480.0, help="the check's whole time (default 8 minutes)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "GPU.md")
    p.add_argument("--cpu-smoke", action="store_true", help="run on the CPU at toy sizes (checks the script)")
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)))
    p.add_argument("--seconds", type=float, default=8.0, help="timed seconds per throughput cell")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--plan-steps", type=int, default=PLAN_STEPS)
    a = p.parse_args(argv)
    a.rows = [r for r in a.rows.split(",") if r]
    a.concurrency = [int(k) for k in a.concurrency.split(",") if k]
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        print(f"error: make gpu-check needs a CUDA GPU, and torch {torch.__version__} sees none: on a GPU machine "
              "install the CUDA build (make install TORCH_INDEX=https://download.pytorch.org/whl/cu128); on a CPU "
              "machine, --cpu-smoke checks the script", file=sys.stderr)
        return 2
    clock = Clock(args.budget_s)
    args.machine = machine(args)
    result = {"machine": args.machine, "concurrency": args.concurrency}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as d:
        tmp = Path(d)
        for name, fn in (("rows", rows_section), ("repro", repro_section), ("ddp", ddp_section),
                         ("throughput", throughput_section)):
            t0 = time.perf_counter()
            result[name] = fn(args, clock, tmp)
            print(f"{name}: {time.perf_counter() - t0:.0f} s, {clock.left():.0f} s left", flush=True)
        result["plan"] = plan_section(args, clock, tmp, result["throughput"])
    result["wall_s"] = args.budget_s - clock.left()
    atomic_write(args.out, markdown(result))
    atomic_write(args.out.with_name("gpu.json"), json.dumps(result, indent=1, default=str) + "\n")
    print(f"wrote {args.out} and {args.out.with_name('gpu.json')} in {result['wall_s']:.0f} s")
    failed = [n for n in ("rows", "repro", "ddp") for s in (result[n].values() if n == "rows" else [result[n]])
              if s.get("ok") is False]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
