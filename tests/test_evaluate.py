"""evaluate.py on a finished run: eval.json + the five figures from weights_only checkpoint loads."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from ldm import cli
from tests.conftest import compose_cfg

FIGURES = ("samples.png", "recon.png", "interpolation.png", "latent_hist.png", "class_hist.png")


@pytest.fixture(scope="module")
def finished_run(fast_run):
    """The shared debug=fast run (seed=1) and its config."""
    return fast_run, OmegaConf.load(fast_run / ".hydra" / "config.yaml")


def test_evaluate_writes_eval_json_and_figures(finished_run, tmp_path):
    run_dir, train_cfg = finished_run
    out = tmp_path / "eval"
    # no metrics overrides: evaluate.py evaluates with the run's own (debug=fast) metrics config
    cfg = compose_cfg([f"run_dir={run_dir}", f"out_dir={out}", f"paths.cache_dir={train_cfg.paths.cache_dir}"],
                      config_name="evaluate", output_dir=tmp_path / "logs")
    fid = cli.evaluate(cfg)
    result = json.loads((out / "eval.json").read_text())
    trained = json.loads((run_dir / "metrics.json").read_text())
    assert result["status"] == "ok" and fid == result["gen/fid"]
    for name in FIGURES:
        assert (out / name).stat().st_size > 500, name
    # the same models, the same evaluation settings: the same numbers as at the end of training
    for key in ("recon/psnr", "recon/rfid", "gen/fid", "latent/prior_fid", "eval/fid_floor", "gen/classes_covered",
                "latent/interp_ppl", "latent/cycle_error", "recon/class_accuracy"):
        assert result[key] == pytest.approx(trained[key], rel=1e-6), key
    assert result["eval/stage2_checkpoint"].endswith("checkpoints/stage2/last.ckpt")
    assert result["eval/seed"] == 1  # the run's seed (seed=1), so the samples are the ones training drew


def test_evaluate_bad_run_dir(tmp_path, capsys):
    cfg = compose_cfg([f"run_dir={tmp_path}/nope"], config_name="evaluate", output_dir=tmp_path / "logs")
    with pytest.raises(SystemExit) as e:
        cli.evaluate(cfg)
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == (f"error: run_dir={tmp_path}/nope is not a directory: pass a train.py "
                                               f"run directory or an export")


@pytest.mark.slow  # a second sampling pass over a trained run (1.6 s)
def test_evaluate_with_another_sampler(finished_run, tmp_path):
    run_dir, train_cfg = finished_run
    out = tmp_path / "ddpm"
    cfg = compose_cfg([f"run_dir={run_dir}", f"out_dir={out}", "metrics.features=null", "sampler=ddpm",
                       "sampler.steps=7"], config_name="evaluate", output_dir=tmp_path / "logs")
    cli.evaluate(cfg)
    result = json.loads((out / "eval.json").read_text())
    assert result["gen/nfe"] == 7 and result["eval/sampler"] == "sample_ddpm"
    # a metrics override on the command line wins over the run's own metrics config: no feature metrics
    assert result.get("gen/fid") is None and result["recon/psnr"] > 0


@pytest.mark.slow  # re-evaluates a sweep (3 s)
def test_table_reevaluates_every_finished_job(finished_run, tmp_path):
    """table.reevaluate=true: each ok job is evaluated again from its checkpoints (here with fewer samples) into
    <job>/<eval_file>, and the table is built from those numbers under its own name."""
    import shutil

    import yaml

    run_dir, train_cfg = finished_run
    sweep = tmp_path / "sweep"
    shutil.copytree(run_dir, sweep / "0")
    (sweep / "0" / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["autoencoder=vae", "seed=1"]))
    (sweep / "1" / ".hydra").mkdir(parents=True)  # a job that never finished: listed, not evaluated
    (sweep / "1" / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["autoencoder=ae", "seed=1"]))
    cfg = compose_cfg([f"table.dir={sweep}", "table.reevaluate=true", "table.eval_file=n40/eval.json",
                       "table.name=table_n40", "metrics.num_samples=40", "metrics.features=null",
                       "table.columns=[gen/nfe,recon/psnr]"], config_name="evaluate", output_dir=tmp_path / "logs")
    cli.evaluate(cfg)
    result = json.loads((sweep / "0" / "n40" / "eval.json").read_text())
    assert result["eval/num_samples"] == 40 and (sweep / "0" / "n40" / "samples.png").is_file()
    assert not (sweep / "1" / "n40").exists() and not (sweep / "table.md").exists()
    md = (sweep / "table_n40.md").read_text()
    assert "Re-evaluated from checkpoints (n40/eval.json over metrics.json): 1 of 2 jobs, 40 samples." in md
    assert "job 1 (autoencoder=ae, seed=1): missing" in md
