"""A trained model, from a run directory or an export (`ldm.run.export`): `load(path)`.

An export is one directory that holds everything sampling and evaluation need, without the run:
`autoencoder.safetensors` and `diffusion.safetensors` (the latter with the latent scale and shift
buffers and the EMA weights), and `model.json` (each module's class and hyper-parameters, the run's
resolved config, the data's class names, and where it came from). Loading either checks what it
reads as every load does: the `_target_` allowlist on configs and hyper-parameters, weights-only reads,
the class and shapes of each module against its config.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from ldm.autoencoders.base import Autoencoder
from ldm.errors import ConfigError
from ldm.rundir import PATTERN, UNFINISHED, pick_checkpoint, read_status, upgrade_config
from ldm.utils.checkpoint import check_fits, load_module, state_mismatch
from ldm.utils.config import MODEL_TARGETS, check_targets, get_class, instantiate_module, plain

EXPORT = "model.json"
FORMAT = 1


@dataclass
class Model:
    """A run's config (the run's own, resolved) and its two stages, ready to sample or evaluate."""

    config: DictConfig
    autoencoder: Any
    diffusion: Optional[Any]
    info: dict = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)

    def names(self) -> list[str]:
        """The data's class names (kept by an export; for a run directory read from its data, once)."""
        if not self.class_names and self.diffusion is not None and self.diffusion.num_classes:
            from ldm.utils.config import build

            data = build(self.config.data)
            data.setup()
            self.class_names = [str(n) for n in data.class_names]
        return self.class_names

    def class_index(self, wanted: Any) -> Optional[int]:
        """A class given as an index or by name, as the index the diffusion was trained with; None for None."""
        if wanted is None:
            return None
        ld = self.diffusion
        if ld is None or not ld.num_classes:
            raise ConfigError(f"class={wanted}: this run is not class-conditional; train with "
                              f"diffusion.class_conditional=true to sample chosen classes")
        names = self.names()
        index = names.index(str(wanted)) if str(wanted) in names else (
            int(wanted) if str(wanted).lstrip("-").isdigit() else -1)
        if not 0 <= index < ld.num_classes:
            raise ConfigError(f"class={wanted} is not one of the run's {ld.num_classes} classes "
                              f"({', '.join(names) if names else f'0..{ld.num_classes - 1}'})")
        return index

    def sampler_for(self, sampler: Any = None, steps: Optional[int] = None) -> Any:
        """The sampler to use: the run's own, a named one (`conf/sampler/<name>.yaml`, e.g. ddim, ddpm, dpmpp_2m)
        or a sampler config dict, with `steps` replacing its number of steps."""
        import functools

        from ldm.diffusion.samplers import check_sampler
        from ldm.utils.config import build

        ld = self.diffusion
        chosen = ld.sampler
        if isinstance(sampler, str):
            chosen = build(sampler_config(sampler))
        elif sampler is not None:
            chosen = build(plain(sampler) if isinstance(sampler, DictConfig) else dict(sampler))
        if steps is not None:
            if int(steps) < 1:
                raise ConfigError(f"steps={steps} must be an integer >= 1")
            chosen = functools.partial(chosen.func, *chosen.args, **{**chosen.keywords, "steps": int(steps)})
        check_sampler(chosen, ld.process.num_timesteps)
        return chosen

    def sample(self, n: int, seed: int = 0, batch_size: int = 64, label: Any = None, device: str = "cpu",
               show: bool = False, sampler: Any = None, steps: Optional[int] = None,
               guidance_scale: Optional[float] = None):
        """n decoded samples, a (n, C, H, W) CPU tensor in [-1, 1]; batch i draws its noise from seed + i, as
        evaluation does, so the same arguments give the same images.

        `label`: a class index or name (class-conditional runs); `sampler`: a name under conf/sampler/ (ddim, ddpm,
        dpmpp_2m) or a sampler config, default the run's own; `steps`: its number of steps; `guidance_scale`:
        classifier-free guidance (default the run's); `show`: a progress bar of sampler steps."""
        import torch

        if self.diffusion is None:
            raise ConfigError("this model has no stage-2 model to sample (its run ran stage=stage1)")
        ld = self.diffusion.to(torch.device(device)).eval()
        self.autoencoder.to(torch.device(device)).eval()
        index = self.class_index(label)
        own = (ld.sampler, ld.hparams.guidance_scale)
        try:  # the knobs hold for this call only
            ld.sampler = self.sampler_for(sampler, steps)
            if guidance_scale is not None:
                if not float(guidance_scale) >= 0:
                    raise ConfigError(f"guidance_scale={guidance_scale} must be a number >= 0")
                ld.hparams.guidance_scale = float(guidance_scale)
            with torch.no_grad():
                return ld.generate(n, seed=seed, batch_size=batch_size, show=show, label=index)[0]
        finally:
            ld.sampler, ld.hparams.guidance_scale = own


def sampler_config(name: str) -> dict:
    """conf/sampler/<name>.yaml composed (its defaults, e.g. the spacing) as a plain dict."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    conf = Path(__file__).resolve().parents[2] / "conf"
    options = sorted(p.stem for p in (conf / "sampler").glob("*.yaml"))
    if name not in options:
        raise ConfigError(f"sampler={name}: choose one of {', '.join(options)}")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
            cfg = compose(config_name="sample", overrides=[f"sampler={name}"])
    finally:
        GlobalHydra.instance().clear()
    return plain(cfg.sampler)


def device_for(name: str):
    """`device=` of evaluate.py / sample.py as a torch.device: `auto` is cuda where there is one, else cpu."""
    import torch

    return torch.device(name if name != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))


def load_run(run_dir: Path, which: str = "last") -> tuple[DictConfig, Any, Optional[Any], dict]:
    """(training config, autoencoder, latent diffusion or None, info) of a finished run.

    The run's config passes the `_target_` allowlist before anything is built from it; checkpoints are
    read weights-only and checked against that config; a run whose training did not finish is refused.
    """
    cfg_path = run_dir / ".hydra" / "config.yaml"
    if not cfg_path.is_file():
        raise ConfigError(f"run_dir={run_dir} has no .hydra/config.yaml: point run_dir at a train.py run directory")
    where = f"run_dir={run_dir} (.hydra/config.yaml)"
    try:
        cfg = OmegaConf.load(cfg_path)
    except Exception as e:
        raise ConfigError(f"{where} cannot be read ({type(e).__name__}): the run directory is damaged") from None
    check_targets(cfg, where)
    cfg = upgrade_config(cfg)
    record = read_status(run_dir / "metrics.json")
    status = record["status"]
    if status in UNFINISHED:
        raise ConfigError(f"run_dir={run_dir} is {status}: its training did not finish; continue it with "
                          f"`train.py resume={run_dir} <its overrides>`, then evaluate it")
    ae_cfg = plain(cfg.autoencoder)
    ae_cfg.pop("ckpt_path", None)
    configured = instantiate_module(ae_cfg, where)
    ae_ckpt = pick_checkpoint(run_dir, "stage1", which)
    info = {"eval/stage1_checkpoint": str(ae_ckpt) if ae_ckpt else None,
            # which training an evaluation of this run belongs to (a sweep's table checks it: ldm.analysis.collect)
            **{f"eval/of_{s}_key": record.get(f"{s}/key") for s in ("stage1", "stage2")}}
    if ae_ckpt is not None:
        ae = load_module(ae_ckpt, "checkpoint", expected=type(configured))
        check_fits(ae, configured, "checkpoint", ae_ckpt)
    elif sum(p.numel() for p in configured.parameters()):
        raise ConfigError(f"run_dir={run_dir} has no stage-1 checkpoint (checkpoints/stage1/{PATTERN[which]}): "
                          f"train the run again (finished runs own their checkpoints, also when a stage came from "
                          f"the cache)")
    else:
        ae = configured  # nothing to load (identity)
    ld = None
    ld_ckpt = pick_checkpoint(run_dir, "stage2", which)
    info["eval/stage2_checkpoint"] = str(ld_ckpt) if ld_ckpt else None
    if ld_ckpt is not None:
        from ldm.diffusion.module import LatentDiffusion

        ld = load_module(ld_ckpt, "checkpoint", expected=LatentDiffusion)
        if tuple(ld.latent_shape) != tuple(ae.latent_shape):
            raise ConfigError(f"checkpoint={ld_ckpt} models latents of shape {ld.latent_shape}, but the run's "
                              f"autoencoder makes {tuple(ae.latent_shape)}: the run directory mixes two runs")
        ld.set_decoder(ae.decode, ae.latent_range)
    elif cfg.stage != "stage1" and isinstance(ae, Autoencoder):
        raise ConfigError(f"run_dir={run_dir} has no stage-2 checkpoint (checkpoints/stage2/{PATTERN[which]}) "
                          f"although its config ran stage 2: train the run again")
    return cfg, ae, ld, info



def load(path: str | os.PathLike, which: str = "last") -> Model:
    """The model of an export (a folder with model.json) or of a finished train.py run directory."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"run_dir={path} is not a directory: pass a train.py run directory or an export")
    if (path / EXPORT).is_file():
        return load_export(path)
    cfg, ae, ld, info = load_run(path, which)
    return Model(cfg, ae, ld, info)


def _latent_model() -> type:
    from ldm.autoencoders.base import LatentModel

    return LatentModel


def _latent_diffusion() -> type:
    from ldm.diffusion.module import LatentDiffusion

    return LatentDiffusion


EXPORT_BASES = {"autoencoder": _latent_model, "diffusion": _latent_diffusion}  # what each module of an export is
EXPORT_KEYS = {"format", "source", "config", "class_names", "autoencoder", "diffusion"}


def check_export_meta(meta: Any, where: str) -> None:
    """model.json's shape, before any class is looked up or built: a JSON object with the export's keys only, a
    config mapping, class names as a list of strings, each module as {class: str, hparams: mapping}."""
    def bad(what: str) -> ConfigError:
        return ConfigError(f"{where}: {what}: export the run again (evaluate.py run_dir=<run> export=<dir>)")

    if not isinstance(meta, dict):
        raise bad(f"holds a {type(meta).__name__}, not a JSON object")
    extra, missing = set(meta) - EXPORT_KEYS, {"format", "config", "autoencoder"} - set(meta)
    if extra or missing:
        raise bad(", ".join(([f"unknown keys {sorted(extra)}"] if extra else [])
                            + ([f"missing keys {sorted(missing)}"] if missing else [])))
    if not isinstance(meta["config"], dict):
        raise bad("config is not a mapping")
    names = meta.get("class_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise bad("class_names is not a list of strings")
    for name in ("autoencoder", "diffusion"):
        if name not in meta:
            continue
        spec = meta[name]
        if not isinstance(spec, dict) or set(spec) != {"class", "hparams"} or not isinstance(spec["class"], str) \
                or not isinstance(spec["hparams"], dict):
            raise bad(f"{name} must be {{class: <name>, hparams: {{...}}}}, got {json.dumps(spec)[:80]}")


def load_export(path: Path) -> Model:
    """The model of an export directory written by `export`."""
    from safetensors.torch import load_file

    where = f"run_dir={path} ({EXPORT})"
    try:
        meta = json.loads((path / EXPORT).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{where} cannot be read ({type(e).__name__}): export the run again") from None
    check_export_meta(meta, where)
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{where} has format {meta.get('format')}, this ldm reads {FORMAT}: export the run again")
    cfg = OmegaConf.create(meta["config"])
    check_targets(cfg, where)
    modules = {}
    for name in ("autoencoder", "diffusion"):
        if name not in meta:
            continue
        spec = meta[name]
        check_targets(spec["hparams"], where, f"{name}.hparams", allowed=MODEL_TARGETS)
        cls = get_class(spec["class"], f"{name}.class", where)
        if not issubclass(cls, EXPORT_BASES[name]()):  # before anything is built: a Trainer is never constructed
            raise ConfigError(f"{where}: {name}.class={spec['class']} is not a {EXPORT_BASES[name]().__name__}: "
                              f"export the run again")
        try:
            module = cls(**spec["hparams"])
        except (TypeError, ValueError) as e:  # missing, extra or ill-typed hyper-parameters
            raise ConfigError(f"{where}: {name}.hparams do not build a {cls.__name__} ({' '.join(str(e).split())}): "
                              f"export the run again") from None
        try:
            state = load_file(str(path / f"{name}.safetensors"))
        except Exception as e:  # missing, truncated, not safetensors
            raise ConfigError(f"{where}: {name}.safetensors cannot be read ({type(e).__name__}): export the run "
                              f"again") from None
        problem = state_mismatch(module, state)
        if problem:
            raise ConfigError(f"{where}: {name}.safetensors does not fit its {cls.__name__} ({problem})")
        module.load_state_dict(state)
        modules[name] = module.eval()
    ae, ld = modules["autoencoder"], modules.get("diffusion")
    if ld is not None:
        ld.set_decoder(ae.decode, ae.latent_range)
    return Model(cfg, ae, ld, {"eval/export": str(path)}, list(meta.get("class_names") or []))
