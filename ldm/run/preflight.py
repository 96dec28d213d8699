"""Everything a run can know is wrong before its first training step, checked before that step.

`check(cfg)` builds the data and the modules the config describes, reads and checks every checkpoint it
names, and refuses (a `UserError` naming the key and the fix) a row without an encoder asked for stage 2,
evaluator features on unlabelled or single-class data, budgets <= 0, batch sizes larger than the
training split, and a test split too small to measure. What it built is handed to the pipeline.

Why this module is long: it is every check a run makes before training, in the order they can fail (settings,
accelerator and its GPU settings, data, modules, checkpoints, resume); split up, the order would be lost.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from ldm.autoencoders.base import Autoencoder
from ldm.errors import ConfigError
from ldm.run import runtime, schema
from ldm.rundir import read_status
from ldm.utils.checkpoint import check_fits, load_checkpoint, run_checkpoint
from ldm.utils.config import build, get_class, instantiate_module, plain

log = logging.getLogger(__name__)
STAGES = ("all", "stage1", "stage2")


@dataclass
class Plan:
    """What the checks built: the pipeline trains, loads or evaluates exactly these."""

    stage: str
    datamodule: Any
    autoencoder: Any                     # built from the config, or loaded from autoencoder.ckpt_path
    diffusion: Optional[Any]             # built from the config (None when stage=stage1)
    device: torch.device
    ae_checkpoint: Optional[str] = None  # autoencoder.ckpt_path, loaded and checked
    ae_checkpoint_steps: Optional[int] = None
    resume1: Optional[str] = None        # stage-1 checkpoint to continue from
    resume2: Optional[str] = None        # stage-2 checkpoint to continue from


def eval_device(cfg: DictConfig) -> torch.device:
    """Where encoding, sampling and evaluation run: the GPU when the trainer may use one."""
    wants_gpu = str(cfg.trainer.accelerator) in ("auto", "gpu", "cuda")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


INSTALL_CUDA = "make install TORCH_INDEX=https://download.pytorch.org/whl/cu128"


def check_accelerator(cfg: DictConfig) -> None:
    """trainer=gpu / ddp on a machine or a torch build without CUDA: one error naming the install command (not
    Lightning's traceback once the Trainer is built)."""
    if str(cfg.trainer.get("accelerator")) not in ("gpu", "cuda") or torch.cuda.is_available():
        return
    build_kind = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
    raise ConfigError(f"trainer.accelerator={cfg.trainer.accelerator} needs a usable CUDA GPU, but this torch "
                      f"({torch.__version__}) is {build_kind} and sees no GPU: install the CUDA build "
                      f"({INSTALL_CUDA}), or drop trainer=gpu / trainer=ddp (trainer=cpu, trainer=ddp_cpu)")


# where each metrics.json prefix comes from: a search that optimises a metric its runs never produce fails every
# trial, so it is refused before the first one
NEEDS_STAGE2 = ("gen/", "mem/", "stage2/")
NEEDS_FEATURES = ("gen/fid", "gen/kid", "gen/precision", "gen/recall", "gen/density", "gen/coverage", "recon/rfid",
                  "latent/prior_fid", "recon/class_accuracy", "gen/classes_covered", "gen/class_kl")


def check_optimized_metric(cfg: DictConfig) -> None:
    """Under an optimising sweeper (Optuna), `optimized_metric` must be one the configured run reports."""
    try:
        from hydra.core.hydra_config import HydraConfig

        node = HydraConfig.get().sweeper if HydraConfig.initialized() else {}
        sweeper = str(node["_target_"]) if "_target_" in node else ""
    except (ValueError, AttributeError):
        sweeper = ""
    metric = cfg.get("optimized_metric")
    if "optuna" not in sweeper.lower() or not metric:
        return
    if cfg.stage == "stage1" and str(metric).startswith(NEEDS_STAGE2):
        raise ConfigError(f"optimized_metric={metric} is measured on stage 2, but this search trains stage=stage1 "
                          f"only: optimise a stage-1 metric (e.g. recon/rfid, recon/psnr) or drop stage=stage1")
    features = (cfg.get("metrics") or {}).get("features")
    if not features and str(metric).startswith(NEEDS_FEATURES):
        raise ConfigError(f"optimized_metric={metric} needs evaluator features, but metrics.features=null: optimise "
                          f"another metric (e.g. recon/psnr) or keep the features")


def batches_in_checkpoint(ckpt: dict) -> Optional[int]:
    """Training batches a Lightning checkpoint had completed (global_step counts GAN optimizer steps twice)."""
    try:
        return int(ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"])
    except (KeyError, TypeError):
        return ckpt.get("global_step")


# what a resumed run must share with the stopped one: everything that changes what is trained (not where files
# go, what is logged, how it is evaluated or sampled, or the checkpoints resume= picks itself)
RESUME_KEYS = ("seed", "stage", "data", "backbone", "autoencoder", "diffusion", "stage1", "stage2",
               "trainer.precision", "compile")
RESUME_IGNORED = ("data.num_workers", "data.root", "autoencoder.ckpt_path", "autoencoder.num_vis",
                  "autoencoder.vis_seed", "diffusion.num_vis", "diffusion.vis_seed", "stage2.ckpt_path")


def _flat(d: Any, prefix: str = "") -> dict:
    if isinstance(d, dict):
        return {k: v for key, sub in d.items() for k, v in _flat(sub, f"{prefix}{key}.").items()} or {prefix[:-1]: {}}
    return {prefix[:-1]: d}


MATMUL_PRECISIONS = ("highest", "high", "medium")  # torch.set_float32_matmul_precision's


def ddp_devices(cfg: DictConfig) -> int:
    """How many processes a DDP trainer config runs (its local ranks x nodes; 1 when not DDP)."""
    trainer = cfg.get("trainer") or {}
    return runtime.local_ranks(trainer) * int(trainer.get("num_nodes") or 1)


def config_differences(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """(dotted key, the stopped run's value, this run's) for every RESUME_KEYS setting that differs (unresolved
    values on both sides: interpolations compare as written)."""
    def pick(cfg: dict) -> dict:
        out = {}
        for key in RESUME_KEYS:
            node: Any = cfg
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            out.update(_flat(node, f"{key}.") if isinstance(node, dict) else {key: node})
        return {k: v for k, v in out.items() if not any(k == i or k.startswith(i + ".") for i in RESUME_IGNORED)}

    a, b = pick(old), pick(new)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def intact_checkpoint(run: Path, stage: str) -> Optional[Path]:
    """The stage's last.ckpt, or, when it is torn (a full disk, a kill mid-write by an older ldm), the newest
    checkpoint of the stage that reads back whole (training continues from there); None when none does."""
    from ldm.utils.checkpoint import read

    last = run_checkpoint(run, stage)
    candidates = [last] + sorted(last.parent.glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True) \
        if last.parent.is_dir() else []
    for path in candidates:
        if not path.is_file():
            continue
        try:
            read(path, f"resume ({stage})")
        except ConfigError:
            log.warning("resume: %s is torn or unreadable; looking for an older checkpoint of %s", path, stage)
            continue
        return path
    return None


def resume_from(cfg: DictConfig) -> tuple[Optional[str], Optional[str], Optional[str]]:
    """(ckpt_path, autoencoder.ckpt_path, stage2.ckpt_path) for `resume=<run dir>`, else the config's own.

    A run whose stage 1 finished (its status file lists stage1/steps) reuses that autoencoder; an unfinished
    stage 1 continues from its last.ckpt; a stage-2 last.ckpt continues stage 2.
    """
    resume, ae_ckpt = cfg.get("resume"), cfg.autoencoder.get("ckpt_path")
    ckpt1, ckpt2 = cfg.get("ckpt_path"), cfg.stage2.get("ckpt_path")
    if not resume:
        return ckpt1, ae_ckpt, ckpt2
    run = Path(resume)
    if ckpt1 or ae_ckpt or ckpt2:
        raise ConfigError("resume=<run dir> picks the checkpoints itself: drop ckpt_path, autoencoder.ckpt_path "
                          "and stage2.ckpt_path")
    if not (run / ".hydra" / "config.yaml").is_file():
        raise ConfigError(f"resume={run} is not a train.py run directory (no .hydra/config.yaml)")
    status = read_status(run / "metrics.json")
    if status["status"] == "ok":
        raise ConfigError(f"resume={run} finished already (status ok): evaluate it with evaluate.py run_dir={run}")
    in_place = run.resolve() == Path(cfg.paths.output_dir).resolve()
    if in_place and status.get("pid") in (os.getpid(), os.getppid()) and status.get("host") == socket.gethostname():
        # resumed in place: the record this run wrote at its start (this process's, or under DDP rank 0's, which
        # launched this rank)
        status = {**status, "status": "interrupted"}
    if status["status"] == "running":  # its process is alive (ldm.rundir.run_status): two copies would train
        raise ConfigError(f"resume={run} is still running (pid {status.get('pid')} on {status.get('host')}): wait "
                          f"for it to end, or stop it first (kill {status.get('pid')})")
    differs = config_differences(yaml.safe_load((run / ".hydra" / "config.yaml").read_text()) or {},
                                 OmegaConf.to_container(cfg, resolve=False))
    if differs:
        shown = "; ".join(f"{k}: {a!r} there, {b!r} here" for k, a, b in differs[:3])
        more = f" (+{len(differs) - 3} more)" if len(differs) > 3 else ""
        raise ConfigError(f"resume={run} trained another experiment: {shown}{more}; pass that run's own overrides "
                          f"({run / '.hydra' / 'overrides.yaml'})")
    last1, last2 = (intact_checkpoint(run, s) for s in ("stage1", "stage2"))
    if "stage1/steps" in status and last1 is not None and last1.name == "last.ckpt":
        ae_ckpt = str(last1)  # stage 1 finished: its final weights
    elif last1 is not None:
        ckpt1 = str(last1)  # unfinished, or finished with a torn last.ckpt: continue from the newest intact one
    ckpt2 = str(last2) if last2 is not None else None
    if not (ckpt1 or ae_ckpt or ckpt2):
        raise ConfigError(f"resume={run} has no checkpoint yet (checkpoints/stage1/last.ckpt): start it again "
                          f"without resume")
    log.info("resume: %s", ", ".join(f"{k}={v}" for k, v in (("ckpt_path", ckpt1), ("autoencoder.ckpt_path", ae_ckpt),
                                                               ("stage2.ckpt_path", ckpt2)) if v))
    return ckpt1, ae_ckpt, ckpt2


CUBLAS_WORKSPACE = ":4096:8"  # what torch's reproducibility notes ask of CUDA >= 10.2 for deterministic cuBLAS


def deterministic_cublas(deterministic: Any) -> Optional[str]:
    """`trainer.deterministic=true` (Lightning: torch.use_deterministic_algorithms) also needs cuBLAS's fixed
    workspace, set in the environment before the first cuBLAS call (a value the user set is kept); without it a
    CUDA run stops at the first matrix product with a RuntimeError. The setting it runs with (None: not asked)."""
    if deterministic is True or deterministic == "warn":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        return os.environ["CUBLAS_WORKSPACE_CONFIG"]
    return None


def check(cfg: DictConfig) -> Plan:
    """Build and check everything the run needs before training; a `UserError` for the first problem found."""
    schema.validate(cfg, schema.TRAIN)  # types and ranges first: every later check may then trust them
    if (cfg.get("metrics") or {}).get("features"):
        schema.check_memory(cfg.metrics.get("num_samples"))
    check_accelerator(cfg)
    check_optimized_metric(cfg)
    stage = cfg.stage
    if stage not in STAGES:
        raise ConfigError(f"stage={stage}: choose one of {', '.join(STAGES)}")
    runtime.prepare_from_hydra(cfg.get("threads"), cfg.get("trainer"))  # the entry script did it before torch
    if cfg.float32_matmul_precision not in MATMUL_PRECISIONS:
        raise ConfigError(f"float32_matmul_precision={cfg.float32_matmul_precision}: choose one of "
                          f"{', '.join(MATMUL_PRECISIONS)}")
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    deterministic_cublas(cfg.trainer.get("deterministic") if cfg.get("trainer") else None)
    ckpt1, ae_ckpt, ckpt2 = resume_from(cfg)

    L.seed_everything(cfg.seed, workers=True)
    datamodule = build(cfg.data)
    datamodule.setup()
    splits = {name: len(datamodule.split(name)) for name in ("train", "val", "test")}
    ae_cfg = plain(cfg.autoencoder)
    ae_cfg.pop("ckpt_path", None)
    cls = get_class(ae_cfg.get("_target_"), "autoencoder._target_")
    if stage != "stage1" and not issubclass(cls, Autoencoder):
        raise cls.missing_encoder()  # the row's own message names the alternatives
    ae = instantiate_module(ae_cfg)
    trains_stage1 = not ae_ckpt and sum(p.numel() for p in ae.parameters()) > 0
    if trains_stage1 and cfg.data.batch_size > splits["train"]:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} is larger than the training split "
                          f"({splits['train']} images): lower data.batch_size")
    devices = ddp_devices(cfg)
    for key, size, used in (("data.batch_size", cfg.data.batch_size, trains_stage1 and stage != "stage2"),
                            ("stage2.batch_size", cfg.stage2.batch_size, stage != "stage1")):
        if used and devices > 1 and size % devices:
            raise ConfigError(f"{key}={size} does not split over trainer.devices={devices}: under DDP it is the "
                              f"global batch (each device takes {key} / devices, so budgets match one device); "
                              f"use a multiple of {devices}")
    if stage == "stage2" and trains_stage1:
        raise ConfigError("stage=stage2 needs a trained autoencoder: set autoencoder.ckpt_path=<run>/checkpoints/"
                          "stage1/last.ckpt")
    plan = Plan(stage, datamodule, ae, None, eval_device(cfg))
    if ckpt1:
        _checked(ckpt1, "ckpt_path", ae)
        plan.resume1 = str(ckpt1)
    if ae_ckpt:
        plan.autoencoder, ckpt = _checked(ae_ckpt, "autoencoder.ckpt_path", ae)
        plan.ae_checkpoint, plan.ae_checkpoint_steps = str(ae_ckpt), batches_in_checkpoint(ckpt)

    metrics = cfg.get("metrics") or {}
    if metrics.get("features"):
        build(metrics.features).check(datamodule)  # e.g. the evaluator needs labels
        if splits["test"] < 3:
            raise ConfigError(f"the test split has {splits['test']} images, too few for FID and the real-data floor: "
                              f"raise data.test_fraction, or set metrics.features=null")
        if metrics.get("num_samples") is not None and metrics.num_samples < 3:
            raise ConfigError(f"metrics.num_samples={metrics.num_samples} must be >= 3 (or null: the test split)")

    if stage != "stage1":
        if cfg.stage2.batch_size > splits["train"]:
            raise ConfigError(f"stage2.batch_size={cfg.stage2.batch_size} is larger than the training split "
                              f"({splits['train']} latents): lower stage2.batch_size")
        torch.manual_seed(cfg.seed)  # stage 2's initial weights do not depend on how stage 1 was obtained
        plan.diffusion = instantiate_module(cfg.diffusion, latent_shape=list(plan.autoencoder.latent_shape),
                                            num_classes=datamodule.num_classes, sampler=plain(cfg.sampler))
        if ckpt2:
            _checked(ckpt2, "stage2.ckpt_path", plan.diffusion)
            plan.resume2 = str(ckpt2)
    return plan


def _checked(path: str, key: str, configured: Any) -> tuple[Any, dict]:
    """The module a checkpoint holds, after checking it fits the configured one (class and shapes)."""
    module, ckpt = load_checkpoint(path, key, expected=type(configured))
    check_fits(module, configured, key, path)
    return module, ckpt
