"""How long a claims profile takes (the dry run's estimate): each job's stages at measured step rates."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ldm.analysis.sweep_jobs import CONF_DIR, expand
from ldm.errors import ConfigError

# Fallback job rates (1 thread, this project's 2-core reference machine, benchmarks/RESULTS.md section 4): stage-1
# and stage-2 steps per second of a latent row, stage-2 steps per second of the pixel row, seconds per generated
# sample, start-up + fixed evaluation seconds per job.
RATES = {"stage1_steps_per_s": 4.42, "stage2_steps_per_s": 4.71, "pixel_stage2_steps_per_s": 0.545,
         "gen_sec_per_sample": 0.026, "pixel_gen_sec_per_sample": 0.206, "fixed_s": 22.0, "gpu_step_s": 0.00266,
         # a stage-1 step's cost relative to the VAE's, per row class that differs (measured in the quick profile's
         # version-2 run, 2026-12-03, Intel Xeon: each job's stage-1 seconds per step over its own stage-2 seconds
         # per step, so the contention it ran under cancels, divided by the VAE jobs' ratio; median of 3 seeds)
         "stage1_cost": {"BiGAN": 1.75, "ALI": 1.75, "GANInversion": 1.2}}


def measured_rates(results_json: Path) -> dict:
    """RATES, replaced by the job rates a `benchmarks/bench.py` run measured on this machine where it has them."""
    rates = dict(RATES)
    try:
        results = json.loads(Path(results_json).read_text())["results"]
        summary = results["jobs"]["summary"]
        vae, pixel = summary["vae"], summary.get("identity", {})
        rates["stage1_steps_per_s"] = vae["stage1_steps_per_s"]["median"]
        rates["stage2_steps_per_s"] = vae["stage2_steps_per_s"]["median"]
        rates["gen_sec_per_sample"] = vae["gen_sec_per_sample"]["median"]
        rates["fixed_s"] = vae["eval_s"]["median"] + vae["other_s"]["median"]
        plan = results.get("plan", {}).get("estimates", {})
        rates["gpu_step_s"] = plan.get("latent job (e.g. vae)", {}).get("gpu_step_s", rates["gpu_step_s"])
        if pixel.get("stage2_steps_per_s"):
            rates["pixel_stage2_steps_per_s"] = pixel["stage2_steps_per_s"]["median"]
            rates["pixel_gen_sec_per_sample"] = pixel["gen_sec_per_sample"]["median"]
    except (OSError, KeyError, TypeError, ValueError):
        pass
    return rates


# metrics.num_samples=null means "the test split's size", which only the data module knows: the bundled digits'
NULL_SAMPLES = 180


def train_defaults(conf_dir: Path = CONF_DIR) -> dict:
    """The keys a job's estimate reads, at their YAML defaults (conf/train.yaml, conf/metrics/default.yaml)."""
    train = yaml.safe_load((conf_dir / "train.yaml").read_text())
    metrics = yaml.safe_load((conf_dir / "metrics" / "default.yaml").read_text())
    choice = next(d["autoencoder"] for d in train["defaults"] if isinstance(d, dict) and "autoencoder" in d)
    return {"autoencoder": choice, "stage": train["stage"], "stage1.max_steps": train["stage1"]["max_steps"],
            "stage2.max_steps": train["stage2"]["max_steps"],
            "metrics.num_samples": metrics["num_samples"] if metrics["num_samples"] is not None else NULL_SAMPLES}


def row_class(row: str, conf_dir: Path = CONF_DIR) -> type:
    """The class `autoencoder=<row>` builds: its YAML's `_target_`, or that of the row it extends (its defaults
    list), resolved through the `_target_` allowlist; the class is asked, never instantiated."""
    from ldm.utils.config import get_class

    spec = yaml.safe_load((conf_dir / "autoencoder" / f"{row}.yaml").read_text()) or {}
    if "_target_" in spec:
        return get_class(spec["_target_"], f"autoencoder={row} _target_")
    parents = [d for d in spec.get("defaults", []) if isinstance(d, str) and d != "_self_"]
    if not parents:
        raise ConfigError(f"conf/autoencoder/{row}.yaml names no _target_ and extends no row")
    return row_class(parents[0].removeprefix("/autoencoder/"), conf_dir)


def estimate_job_s(job: dict, defaults: dict, rates: dict, gpu: bool = False) -> float:
    """Seconds one job takes at `rates`: its stages' steps at the measured step rates, its samples, fixed costs.
    `defaults` (empty: `train_defaults()`) fills the keys the job does not override. What a row can do is asked of
    its class: a pixel-space row (identity) has no stage 1 and trains the pixel diffusion, a row that cannot encode
    (gan) has no stage 2;
    a job whose stages are cached elsewhere in the profile is still counted (an upper bound). `gpu`: every step
    at the bench plan's modelled GPU step time (these small networks are kernel-launch bound there) plus the
    CPU-measured fixed and sampling costs (an upper bound: evaluation also runs on the GPU)."""
    job = {**(defaults or train_defaults()), **job}
    ae, stage = job["autoencoder"], job["stage"]
    s1 = int(job["stage1.max_steps"])
    s1 += extra_stage1_steps(ae, job, s1)
    s2 = int(job["stage2.max_steps"])
    n = int(job["metrics.num_samples"]) if job["metrics.num_samples"] not in (None, "null") else NULL_SAMPLES
    cls = row_class(ae)
    t = rates["fixed_s"]
    if not cls.pixel_space and stage != "stage2":
        cost = next((c for k, c in (rates.get("stage1_cost") or {}).items()
                     if k in (b.__name__ for b in cls.__mro__)), 1.0)
        t += s1 * rates["gpu_step_s"] if gpu else s1 * cost / rates["stage1_steps_per_s"]
    if cls.encodes and stage != "stage1":
        prefix = "pixel_" if cls.pixel_space else ""
        t += s2 * rates["gpu_step_s"] if gpu else s2 / rates[prefix + "stage2_steps_per_s"]
        t += n * rates[prefix + "gen_sec_per_sample"]
    return t


def extra_stage1_steps(ae: str, job: dict, s1: int) -> int:
    """Stage-1 batches a row runs beyond stage1.max_steps (gan_inversion_matched's encoder_steps): the job's
    `autoencoder.encoder_steps` override, else the row's YAML value, where `${stage1.max_steps}` means s1."""
    value = job.get("autoencoder.encoder_steps")
    if value is None:
        path = CONF_DIR / "autoencoder" / f"{ae}.yaml"
        value = (yaml.safe_load(path.read_text()) or {}).get("encoder_steps") if path.is_file() else None
    if value is None or str(value) == "null":
        return 0
    return s1 if str(value) == "${stage1.max_steps}" else int(value)


def estimate_profile_s(jobs: dict[str, list[str]], n_jobs: int, rates: dict) -> dict[str, float]:
    """{experiment: job-seconds} and the wall-clock estimate with `n_jobs` side by side ('wall')."""
    defaults = train_defaults()
    out = {name: sum(estimate_job_s(j, defaults, rates) for j in expand(ov)) for name, ov in jobs.items()}
    out["wall"] = sum(out.values()) / max(1, n_jobs)
    out["gpu_hours"] = sum(estimate_job_s(j, defaults, rates, gpu=True)
                           for ov in jobs.values() for j in expand(ov)) / 3600
    return out
