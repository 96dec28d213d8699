"""Every option of every config group composes; bad options get Hydra's list of valid ones."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from tests.conftest import CONF, compose_cfg

GROUPS = ["data", "backbone", "autoencoder", "diffusion", "sampler", "metrics", "trainer", "logger", "callbacks",
          "paths", "hydra", "debug", "experiment", "hparams_search"]


def options(group: str) -> list[str]:
    """The selectable options of a group: its YAML files (shared blocks live in conf/_shared, outside every group)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_every_file_of_a_group_is_an_option_and_shared_blocks_are_outside_the_groups():
    """Hydra lists every YAML of a group as a choice; a shared block inside a group (the old `_base.yaml`) would
    be offered as a row. They live in conf/_shared and every one is used by some option."""
    private = sorted(str(p.relative_to(CONF)) for p in CONF.rglob("_*.yaml") if "_shared" not in p.parts)
    assert private == []
    shared = sorted(p.relative_to(CONF / "_shared") for p in (CONF / "_shared").rglob("*.yaml"))
    assert [str(p) for p in shared] == ["autoencoder/autoencoder.yaml", "autoencoder/base.yaml", "autoencoder/gan.yaml"]
    text = "\n".join(p.read_text() for p in CONF.rglob("*.yaml"))
    for block in shared:
        assert f"/_shared/{block.with_suffix('')}@_here_" in text or f"- {block.stem}\n" in text, block


@pytest.fixture(scope="module")
def composed(tmp_path_factory) -> dict[tuple[str, str], dict]:
    """Every option of every group composed once (`train.py <group>=<option>`), every interpolation resolved."""
    out = {}
    for group in GROUPS:
        for option in options(group):
            run = tmp_path_factory.mktemp("run")
            job = OmegaConf.to_container(compose_cfg([f"{group}={option}"], output_dir=run), resolve=True)
            out[(group, option)] = {"job": job, "run": run}
    return out


@pytest.mark.slow  # composes all ~60 options (~20 s): the slow tier
def test_every_option_composes(composed):
    assert len(composed) >= 35
    for (group, option), c in composed.items():
        job = c["job"]
        assert job["paths"]["output_dir"] == str(c["run"]), (group, option)
        assert job["seed"] == 0 and job["stage1"]["max_steps"] >= 1, (group, option)


def test_groups_have_options():
    for group in ["data", "autoencoder", "trainer", "logger", "callbacks", "debug"]:
        assert options(group), group
    assert set(options("trainer")) >= {"default", "cpu", "gpu", "ddp", "ddp_cpu"}
    assert set(options("logger")) >= {"csv", "wandb", "tensorboard", "none"}


def test_defaults_are_digits_vae_csv(tmp_path):
    cfg = compose_cfg([], output_dir=tmp_path)
    assert cfg.data._target_.endswith("DigitsDataModule")
    assert cfg.autoencoder._target_.endswith(".VAE")
    assert list(cfg.logger) == ["csv"]
    # the default latent compresses: fewer values than the 64 a digit holds
    bb = cfg.backbone
    assert bb.latent_channels * (cfg.data.image_size // bb.f) ** 2 < 64


@pytest.mark.slow  # composes all ~60 options (~20 s): the slow tier
def test_each_dataset_names_its_latent_shape_and_backbone_overrides_win(composed, tmp_path):
    """data.latent_f / data.latent_channels are the backbone's defaults: digits 2x4x4, RGB data >= 3 channels."""
    shapes = {}
    for option in options("data"):
        job = composed[("data", option)]["job"]
        bb, data = job["backbone"], job["data"]
        assert (bb["f"], bb["latent_channels"]) == (data["latent_f"], data["latent_channels"]), option
        assert job["autoencoder"]["backbone"] == bb, option
        assert "min_psnr" in data["recon_check"], option
        shapes[option] = (bb["latent_channels"], data["image_size"] // bb["f"])
        if data["channels"] == 3:
            assert bb["latent_channels"] >= 3 and "min_chroma_ratio" in data["recon_check"], option
    assert shapes["digits"] == (2, 4) and shapes["textures"] == (4, 8)
    cfg = compose_cfg(["data=textures", "backbone.f=8", "backbone.latent_channels=8"], output_dir=tmp_path)
    assert (cfg.autoencoder.backbone.f, cfg.autoencoder.backbone.latent_channels) == (8, 8)  # 4x4x8


def test_derived_values_are_interpolated(tmp_path):
    cfg = compose_cfg(["data.image_size=8"], output_dir=tmp_path)
    assert cfg.autoencoder.image_size == 8 and cfg.autoencoder.in_channels == cfg.data.channels


def test_unknown_option_lists_valid_ones(tmp_path):
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as e:
        compose_cfg(["autoencoder=nope"], output_dir=tmp_path)
    assert "vae" in str(e.value) and "nope" in str(e.value)


def test_debug_fast_is_tiny(tmp_path):
    cfg = compose_cfg(["debug=fast"], output_dir=tmp_path)
    assert cfg.stage1.max_steps <= 10 and cfg.backbone.ch <= 8 and cfg.autoencoder.backbone.ch <= 8


def _nodes(node, path=""):
    """(dotted path, dict) of every mapping in a plain config tree."""
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _nodes(v, f"{path}.{k}" if path else k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _nodes(v, f"{path}[{i}]")


# config nodes without a `_target_` that a class or function of ours takes as keyword arguments
UNTARGETED = {"backbone": "ldm.nets.backbone.BackboneSpec"}


@pytest.mark.slow  # composes all ~60 options (~20 s): the slow tier
def test_every_class_default_equals_its_yaml(composed):
    """One source of truth: a default in a signature of ours must be the value every config gives that argument
    (or the argument must have no default). Fails on the first drift, naming class, argument and both values."""
    import inspect

    import hydra

    seen: dict[tuple[str, str], set] = {}
    for (group, option), c in composed.items():
        if group not in ("autoencoder", "data", "diffusion", "sampler", "metrics", "backbone"):
            continue
        job = dict(c["job"])
        job.pop("hydra", None)
        for path, node in _nodes(job):
            target = node.get("_target_") or UNTARGETED.get(path)
            if not isinstance(target, str) or not target.startswith("ldm."):
                continue
            for arg, value in node.items():
                if not arg.startswith("_"):
                    seen.setdefault((target, arg), set()).add(repr(value))
    drift = []
    for (target, arg), values in sorted(seen.items()):
        obj = hydra.utils.get_object(target)
        defined_in = getattr(obj.__init__ if isinstance(obj, type) else obj, "__module__", "") or ""
        if not defined_in.startswith("ldm."):  # a signature inherited from a library (e.g. the progress bar)
            continue
        params = inspect.signature(obj).parameters
        default = params[arg].default if arg in params else inspect.Parameter.empty
        if default is not inspect.Parameter.empty and {repr(default)} != values:
            drift.append(f"{target}({arg}={default!r}) but the configs say {sorted(values)}")
    assert not drift, "\n".join(drift)


@pytest.mark.slow  # composes several presets (~2 s): the slow tier
def test_debug_presets_keep_their_promises(tmp_path):
    """debug=fast keeps an experiment's task_name; overfit trains long on 2 batches; limit keeps the real network
    sizes; profiler names Lightning's profiler; the Optuna search minimises the generation FID."""
    fast = compose_cfg(["experiment=kl_weight", "debug=fast"], output_dir=tmp_path)
    assert fast.task_name == "kl_weight"
    overfit = compose_cfg(["debug=overfit"], output_dir=tmp_path)
    assert overfit.data.overfit_batches == 2 and overfit.stage1.max_steps >= 100 and overfit.backbone.ch <= 8
    default, limit = compose_cfg([], output_dir=tmp_path), compose_cfg(["debug=limit"], output_dir=tmp_path)
    assert limit.backbone == default.backbone and limit.diffusion.net == default.diffusion.net
    assert limit.stage1.max_steps < default.stage1.max_steps and default.data.overfit_batches == 0
    profiler = compose_cfg(["debug=profiler"], output_dir=tmp_path)
    assert profiler.trainer.profiler._target_ == "lightning.pytorch.profilers.SimpleProfiler"
    assert compose_cfg([], output_dir=tmp_path).optimized_metric == "gen/fid"
    search = compose_cfg(["hparams_search=vae_optuna"], output_dir=tmp_path)
    assert search.optimized_metric == "gen/fid" and search.autoencoder._target_.endswith(".VAE")


def test_debug_default_is_fast_with_anomaly_detection_and_no_cache():
    from tests.conftest import compose_cfg

    cfg = compose_cfg(["debug=default"])
    assert cfg.trainer.detect_anomaly and cfg.trainer.accelerator == "cpu" and cfg.trainer.devices == 1
    assert not cfg.cache.stage1 and not cfg.cache.stage2 and cfg.stage1.max_steps == 4  # debug=fast's budgets
    assert cfg.hydra.job_logging.root.level == "DEBUG"
