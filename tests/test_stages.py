"""Runs own their results: whichever way a stage was obtained (trained, cache, checkpoint), the run directory
holds its checkpoints, evaluate.py reproduces the run's numbers from them, and damaged cache entries are rebuilt."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch

from ldm import cli
from ldm.run import train
from tests.conftest import compose_cfg

FAST = ["debug=fast", "logger=none"]
QUICK = FAST + ["metrics.features=null"]
# what evaluation measures on the models: equal models give equal numbers
COMPARED = ("recon/psnr", "recon/rfid", "recon/class_accuracy", "latent/prior_fid", "latent/cycle_error",
            "gen/fid", "gen/kid", "gen/classes_covered", "eval/fid_floor")


def metrics_of(cfg) -> dict:
    return json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())


def weights(run: Path, stage: str) -> dict:
    return torch.load(run / "checkpoints" / stage / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def evaluate(run_dir: Path, cache_dir: str, tmp_path: Path) -> dict:
    cfg = compose_cfg([f"run_dir={run_dir}", f"out_dir={tmp_path / 'eval'}", f"paths.cache_dir={cache_dir}",
                       "metrics.features.steps=40", "metrics.interp_pairs=4", "metrics.interp_steps=4",
                       "metrics.kid_subsets=10", "metrics.floor_subsets=3"], config_name="evaluate",
                      output_dir=tmp_path / "logs")
    cli.evaluate(cfg)
    return json.loads((tmp_path / "eval" / "eval.json").read_text())


def assert_same_numbers(a: dict, b: dict) -> None:
    for key in COMPARED:
        assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key


@pytest.mark.slow
def test_a_cache_hit_owns_its_checkpoints_and_evaluates_to_its_numbers(make_cfg, tmp_path):
    first = make_cfg(FAST, name="first")
    train.main(first)
    second = make_cfg(FAST, name="second")
    train.main(second)
    m1, m2 = metrics_of(first), metrics_of(second)
    assert m2["stage1/source"] == m2["stage2/source"] == "cache" and m1["stage1/source"] == "trained"
    run = Path(second.paths.output_dir)
    for stage in ("stage1", "stage2"):
        a, b = weights(Path(first.paths.output_dir), stage), weights(run, stage)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), stage
    assert_same_numbers(m1, m2)
    assert_same_numbers(evaluate(run, second.paths.cache_dir, tmp_path / "e1"), m2)
    shutil.rmtree(second.paths.cache_dir)  # the run's results do not live in the cache
    assert_same_numbers(evaluate(run, second.paths.cache_dir, tmp_path / "e2"), m2)


@pytest.mark.slow
def test_stage2_does_not_depend_on_how_stage1_was_obtained(make_cfg):
    """Stage 2 trained after a trained stage 1 == stage 2 trained after the same stage 1 from the cache."""
    runs = [make_cfg(QUICK + ["cache.stage2=false"], name=name) for name in ("trained", "cached")]
    sources = [train.train(cfg)["stage1/source"] for cfg in runs]
    assert sources == ["trained", "cache"]
    a, b = (weights(Path(cfg.paths.output_dir), "stage2") for cfg in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_without_checkpoint_callbacks_the_run_still_owns_its_weights(make_cfg):
    cfg = make_cfg(QUICK + ["callbacks=none", "cache.stage1=false", "cache.stage2=false"])
    m = train.train(cfg)
    run = Path(cfg.paths.output_dir)
    for stage in ("stage1", "stage2"):
        ckpt = torch.load(run / "checkpoints" / stage / "last.ckpt", weights_only=True)
        assert ckpt["global_step"] >= m[f"{stage}/steps"] > 0


@pytest.mark.slow
def test_a_reused_autoencoder_checkpoint_is_linked_into_the_run(make_cfg, tmp_path):
    first = make_cfg(QUICK + ["stage=stage1"], name="first")
    train.train(first)
    src = Path(first.paths.output_dir) / "checkpoints/stage1/last.ckpt"
    second = make_cfg(QUICK + [f"autoencoder.ckpt_path={src}"], name="second")
    m = train.train(second)
    own = Path(second.paths.output_dir) / "checkpoints/stage1/last.ckpt"
    assert m["stage1/source"] == "checkpoint" and own.read_bytes() == src.read_bytes()
    src.unlink()  # the source can go: the run keeps its copy
    assert own.is_file()


CACHED_FILES = [("stage1", "autoencoder.ckpt"), ("stage2", "diffusion.ckpt"), ("latents", "latents.pt"),
                ("evaluator", "evaluator.pt")]


@pytest.mark.slow
def test_each_truncated_cache_file_is_logged_rebuilt_and_gives_the_clean_numbers(make_cfg, caplog):
    clean = make_cfg(FAST, name="clean")
    train.main(clean)
    expected = metrics_of(clean)
    root = Path(clean.paths.cache_dir)
    for kind, name in CACHED_FILES:
        (path,) = root.glob(f"{kind}/*/{name}")
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        caplog.clear()
        cfg = make_cfg(FAST, name=f"after_{kind}")
        with caplog.at_level(logging.WARNING, logger="ldm.utils.cache"):
            train.main(cfg)
        m = metrics_of(cfg)
        assert m["status"] == "ok", (kind, m)
        assert f"{path.parent} is damaged ({name} has" in caplog.text, kind
        assert_same_numbers(m, expected)
        assert (root / kind / ".bad").is_dir() and path.is_file()  # moved aside, then rebuilt in place
        if kind in ("stage1", "stage2"):
            assert m[f"{kind}/source"] == "trained"


def test_ddp_ranks_follow_rank_0s_cache_decision(monkeypatch):
    """Rank 0's look decides and is put in the environment (what the ranks it launches later inherit); another
    rank takes it from there, and looks for itself only when it has neither that nor a process group."""
    from ldm.run.stages import CACHE_DECISION_ENV, shared_decision

    env = CACHE_DECISION_ENV.format("STAGE2")
    monkeypatch.delenv(env, raising=False)
    never = lambda: pytest.fail("rank 0 and informed ranks do not look themselves")  # noqa: E731
    assert shared_decision("stage2", 0, True, never) is True and os.environ[env] == "hit"
    assert shared_decision("stage2", 1, None, never) is True
    assert shared_decision("stage2", 0, False, never) is False and os.environ[env] == "miss"
    assert shared_decision("stage2", 3, None, never) is False
    monkeypatch.delenv(env)
    assert shared_decision("stage2", 1, None, lambda: True) is True  # launched on its own: its own look
