"""Nothing read from a checkpoint, a cache entry or a run directory can run code or write files.

Each attack's payload would create `target` if it ran; every test asserts the file was never created and
that the user got one `error:` line (or, for the cache, that the entry was refused and rebuilt).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from ldm import cli
from ldm.errors import ConfigError
from ldm.run import train
from ldm.utils.checkpoint import read
from tests.conftest import compose_cfg

QUICK = ["debug=fast", "logger=none", "metrics.features=null"]


class Payload:
    """Unpickling this calls open(path, "w"): what a malicious checkpoint does."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def pickle_bomb(path: Path, target: Path) -> Path:
    torch.save({"state_dict": {}, "hyper_parameters": {}, "x": Payload(target)}, path)
    return path


@pytest.fixture(autouse=True)
def no_weights_only_default(monkeypatch):
    """Every test here runs as if the user had turned torch's weights-only default off."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")


@pytest.fixture(scope="module")
def trained(fast_run) -> Path:
    """A finished stage-1 + stage-2 run (tiny), its directory (shared: tests copy it before changing it)."""
    return fast_run


def foreign_target(ckpt: Path, out: Path, target: Path) -> Path:
    """A weights-only checkpoint whose hyper-parameters name builtins.open."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state["hyper_parameters"]["recon_loss"] = {"_target_": "builtins.open", "_args_": [str(target), "w"]}
    torch.save(state, out)
    return out


def one_error(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def run_train(make_cfg, overrides, capsys) -> str:
    cfg = make_cfg(QUICK + overrides)
    with pytest.raises(SystemExit) as e:
        train.main(cfg)
    assert e.value.code == 2
    assert "stage1/steps" not in json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    return one_error(capsys)


def test_read_refuses_a_pickle_payload_although_the_environment_asks_for_pickle(tmp_path):
    target = tmp_path / "pwned"
    with pytest.raises(ConfigError, match="holds objects a weights-only load refuses"):
        read(pickle_bomb(tmp_path / "bomb.ckpt", target), "ckpt_path")
    assert not target.exists()


@pytest.mark.parametrize("key", ["autoencoder.ckpt_path", "ckpt_path", "stage2.ckpt_path"])
def test_a_pickle_payload_on_each_checkpoint_key(key, make_cfg, capsys, tmp_path):
    target = tmp_path / "pwned"
    bomb = pickle_bomb(tmp_path / "bomb.ckpt", target)
    line = run_train(make_cfg, [f"{key}={bomb}"], capsys)
    assert line.startswith(f"error: {key}={bomb} holds objects a weights-only load refuses")
    assert not target.exists()


def test_a_foreign_target_in_checkpoint_hparams_is_refused(trained, make_cfg, capsys, tmp_path):
    target = tmp_path / "truncated_me"
    target.write_text("precious")
    ckpt = foreign_target(trained / "checkpoints/stage1/last.ckpt", tmp_path / "evil.ckpt", target)
    line = run_train(make_cfg, [f"autoencoder.ckpt_path={ckpt}"], capsys)
    assert f"autoencoder.ckpt_path={ckpt}: hyper_parameters.recon_loss._target_=builtins.open is not an allowed " \
           "target" in line
    assert target.read_text() == "precious"


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def evaluate(run_dir: Path, tmp_path: Path, capsys, **extra) -> str:
    cfg = compose_cfg([f"run_dir={run_dir}", "metrics.features=null", f"paths.cache_dir={tmp_path / 'cache'}"] +
                      [f"{k}={v}" for k, v in extra.items()], config_name="evaluate", output_dir=tmp_path / "logs")
    with pytest.raises(SystemExit) as e:
        cli.evaluate(cfg)
    assert e.value.code == 2
    assert not (run_dir / "eval.json").exists()
    return one_error(capsys)


def test_evaluate_refuses_a_pickled_checkpoint_in_the_run(trained, tmp_path, capsys):
    target = tmp_path / "pwned"
    run = copy_run(trained, tmp_path / "run")
    pickle_bomb(run / "checkpoints/stage1/last.ckpt", target)
    assert "holds objects a weights-only load refuses" in evaluate(run, tmp_path, capsys)
    assert not target.exists()


def test_evaluate_refuses_foreign_hparams_in_the_run(trained, tmp_path, capsys):
    target = tmp_path / "truncated_me"
    target.write_text("precious")
    run = copy_run(trained, tmp_path / "run")
    ckpt = run / "checkpoints/stage1/last.ckpt"
    foreign_target(ckpt, ckpt, target)
    assert "hyper_parameters.recon_loss._target_=builtins.open is not an allowed target" in \
        evaluate(run, tmp_path, capsys)
    assert target.read_text() == "precious"


def test_evaluate_refuses_a_run_config_with_a_foreign_target(trained, tmp_path, capsys):
    target = tmp_path / "truncated_me"
    target.write_text("precious")
    run = copy_run(trained, tmp_path / "run")
    config = yaml.safe_load((run / ".hydra/config.yaml").read_text())
    config["data"] = {"_target_": "builtins.open", "_args_": [str(target), "w"]}
    (run / ".hydra/config.yaml").write_text(yaml.safe_dump(config))
    line = evaluate(run, tmp_path, capsys)
    assert line == (f"error: run_dir={run} (.hydra/config.yaml): data._target_=builtins.open is not an allowed "
                    "target: only this package's classes, torch.optim, torch.nn and Lightning's "
                    "Trainer/callbacks/loggers/profilers may be instantiated; if you trust it, add its module to "
                    "LDM_EXTRA_TARGETS")
    assert target.read_text() == "precious"


def test_a_target_that_reaches_a_foreign_function_through_an_allowed_module(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path / "run")
    config = yaml.safe_load((run / ".hydra/config.yaml").read_text())
    config["data"]["_target_"] = "ldm.data.folder.Path.write_text"
    (run / ".hydra/config.yaml").write_text(yaml.safe_dump(config))
    assert "resolves to pathlib.Path.write_text, which is not an allowed target" in evaluate(run, tmp_path, capsys)


@pytest.mark.parametrize("name", ["../escaped", "/tmp/abs", "a/b"])
def test_table_names_cannot_leave_the_table_dir(name, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    (sweep / "0" / ".hydra").mkdir(parents=True)
    (sweep / "0" / ".hydra" / "overrides.yaml").write_text("- seed=0\n")
    cfg = compose_cfg([f"table.dir={sweep}", f"table.name={name}"], config_name="evaluate",
                      output_dir=tmp_path / "logs")
    with pytest.raises(SystemExit) as e:
        cli.evaluate(cfg)
    assert e.value.code == 2
    assert one_error(capsys) == f"error: table.name={name} must be a plain file name: outputs stay inside table.dir"
    assert not list(tmp_path.rglob("*.md")) and not Path("/tmp/abs.md").exists()


def test_table_eval_file_cannot_leave_the_job(tmp_path, capsys):
    cfg = compose_cfg([f"table.dir={tmp_path}", "table.eval_file=../../x.json"], config_name="evaluate",
                      output_dir=tmp_path / "logs")
    with pytest.raises(SystemExit):
        cli.evaluate(cfg)
    assert "table.eval_file=../../x.json must be a relative path without '..'" in one_error(capsys)


@pytest.mark.slow
@pytest.mark.parametrize("kind, name", [("stage1", "autoencoder.ckpt"), ("stage2", "diffusion.ckpt"),
                                        ("latents", "latents.pt")])
def test_a_cache_entry_holding_a_payload_is_refused_and_rebuilt(kind, name, make_cfg, tmp_path):
    """A payload with a matching manifest (someone rewrote both): refused on load, moved aside, rebuilt."""
    from ldm.utils import cache

    first = make_cfg(QUICK, name="first")
    train.train(first)
    (path,) = Path(first.paths.cache_dir).glob(f"{kind}/*/{name}")
    target = tmp_path / "pwned"
    pickle_bomb(path, target)
    manifest = json.loads((path.parent / "manifest.json").read_text())
    manifest["files"][name] = {"size": path.stat().st_size, "sha256": cache.sha256(path)}
    (path.parent / "manifest.json").write_text(json.dumps(manifest))
    second = train.train(make_cfg(QUICK, name="second"))
    assert not target.exists()
    assert list((Path(first.paths.cache_dir) / kind / ".bad").iterdir())
    if kind != "latents":
        assert second[f"{kind}/source"] == "trained"


def test_checkpoint_hparams_may_name_model_parts_only(trained, tmp_path):
    """A logger is fine on the command line, not inside a checkpoint (it could write where the file says)."""
    from ldm.autoencoders.vae import VAE
    from ldm.utils.checkpoint import load_module

    state = torch.load(trained / "checkpoints/stage1/last.ckpt", map_location="cpu", weights_only=True)
    state["hyper_parameters"]["recon_loss"] = {"_target_": "lightning.pytorch.loggers.CSVLogger",
                                               "save_dir": str(tmp_path / "logs")}
    torch.save(state, tmp_path / "logger.ckpt")
    with pytest.raises(ConfigError, match="hyper_parameters.recon_loss._target_=lightning.pytorch.loggers.CSVLogger "
                                          "is not an allowed target"):
        load_module(tmp_path / "logger.ckpt", "autoencoder.ckpt_path", expected=VAE)
    assert load_module(trained / "checkpoints/stage1/last.ckpt", "autoencoder.ckpt_path", expected=VAE).latent_shape \
        == (2, 4, 4)  # the untouched checkpoint loads
    assert not (tmp_path / "logs").exists()
