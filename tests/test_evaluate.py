"""evaluate.py on a finished run: eval.json + the five figures from weights_only checkpoint loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ldm import pipeline, report
from tests.conftest import compose_cfg

FIGURES = ("samples.png", "recon.png", "interpolation.png", "latent_hist.png", "class_hist.png")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = compose_cfg(["debug=fast", "logger=none", "seed=1"], output_dir=out / "train")
    assert pipeline.main(cfg) is not None
    return Path(cfg.paths.output_dir), cfg


def test_evaluate_writes_eval_json_and_figures(finished_run, tmp_path):
    run_dir, train_cfg = finished_run
    out = tmp_path / "eval"
    cfg = compose_cfg([f"run_dir={run_dir}", f"out_dir={out}", "metrics.features.steps=40",
                       f"paths.cache_dir={train_cfg.paths.cache_dir}", "metrics.interp_pairs=4",
                       "metrics.interp_steps=4", "metrics.kid_subsets=10"],
                      config_name="evaluate", output_dir=tmp_path / "logs")
    fid = report.main(cfg)
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
        report.main(cfg)
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == (f"error: run_dir={tmp_path}/nope is not a directory: pass a train.py "
                                               f"run directory")


def test_evaluate_with_another_sampler(finished_run, tmp_path):
    run_dir, train_cfg = finished_run
    out = tmp_path / "ddpm"
    cfg = compose_cfg([f"run_dir={run_dir}", f"out_dir={out}", "metrics.features=null", "sampler=ddpm",
                       "sampler.steps=7"], config_name="evaluate", output_dir=tmp_path / "logs")
    report.main(cfg)
    result = json.loads((out / "eval.json").read_text())
    assert result["gen/nfe"] == 7 and result["eval/sampler"] == "sample_ddpm"


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
    report.main(cfg)
    result = json.loads((sweep / "0" / "n40" / "eval.json").read_text())
    assert result["eval/num_samples"] == 40 and (sweep / "0" / "n40" / "samples.png").is_file()
    assert not (sweep / "1" / "n40").exists() and not (sweep / "table.md").exists()
    md = (sweep / "table_n40.md").read_text()
    assert "Re-evaluated from checkpoints (n40/eval.json over metrics.json): 1 of 2 jobs, 40 samples." in md
    assert "job 1 (autoencoder=ae, seed=1): missing" in md
