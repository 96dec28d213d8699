"""The task wrapper: `running` status from the first moment, `interrupted` when its process is gone, the error
policy (failed / diverged / user error), and tables and evaluate.py that tell these apart."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from ldm import cli
from ldm.analysis import tables
from ldm.errors import ConfigError, Diverged
from ldm.run import train
from ldm.run.task import run_task
from ldm.rundir import read_status
from tests.conftest import compose_cfg


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_status_is_running_while_the_task_runs_then_final(tmp_path):
    path = tmp_path / "metrics.json"
    seen = {}

    def task(cfg, report):
        seen["start"] = json.loads(path.read_text())
        report({"stage1/steps": 3})
        seen["partial"] = json.loads(path.read_text())
        return {"recon/psnr": 30.0}

    out = run_task(compose_cfg([]), task, path)
    assert seen["start"]["status"] == "running" and seen["start"]["pid"] == os.getpid()
    assert seen["start"]["host"] == socket.gethostname()
    assert seen["partial"]["status"] == "running" and seen["partial"]["stage1/steps"] == 3
    assert out == {"status": "ok", "stage1/steps": 3, "recon/psnr": 30.0} == json.loads(path.read_text())


def test_a_diverged_task_is_a_result_and_a_failed_one_keeps_its_partial_metrics(tmp_path):
    path = tmp_path / "metrics.json"

    def diverges(cfg, report):
        report({"stage1/steps": 4})
        raise Diverged("stage 2 loss became nan at step 1")

    out = run_task(compose_cfg([]), diverges, path)  # returns: exit 0
    assert out == {"stage1/steps": 4, "status": "diverged", "error": "stage 2 loss became nan at step 1"}

    def crashes(cfg, report):
        report({"stage1/steps": 4})
        raise RuntimeError("boom\nsecond line")

    path = tmp_path / "second" / "metrics.json"  # its own run directory (a used one is refused: test_faults.py)
    path.parent.mkdir()
    with pytest.raises(RuntimeError):
        run_task(compose_cfg([]), crashes, path)
    assert json.loads(path.read_text()) == {"stage1/steps": 4, "status": "failed",
                                            "error": "RuntimeError: boom second line"}


def test_user_error_is_one_line_and_exit_2(tmp_path, capsys):
    def bad(cfg, report):
        raise ConfigError("data.root=/x does not exist:\n point data.root at a folder")

    with pytest.raises(SystemExit) as e:
        run_task(compose_cfg([]), bad, tmp_path / "metrics.json")
    assert e.value.code == 2
    assert capsys.readouterr().err == "error: data.root=/x does not exist: point data.root at a folder\n"
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed"


def test_read_status_tells_running_interrupted_corrupt_and_missing(tmp_path):
    here = {"pid": os.getpid(), "host": socket.gethostname()}
    cases = {"running": {"status": "running", **here},
             "interrupted": {"status": "running", "pid": dead_pid(), "host": socket.gethostname()},
             "ok": {"status": "ok"}}
    for name, record in cases.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
        assert read_status(tmp_path / f"{name}.json")["status"] == name
    (tmp_path / "corrupt.json").write_text('{"status": "ok", "recon')
    assert read_status(tmp_path / "corrupt.json") == {"status": "corrupt", "error": "corrupt.json unreadable "
                                                                                     "(JSONDecodeError)"}
    assert read_status(tmp_path / "none.json") == {"status": "missing"}


def job(root: Path, num: int, seed: int, metrics) -> Path:
    d = root / str(num)
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"seed={seed}"]))
    if metrics is not None:
        (d / "metrics.json").write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
    return d


def test_a_table_lists_corrupt_and_interrupted_jobs_and_is_still_written(tmp_path):
    job(tmp_path, 0, 0, {"status": "ok", "recon/psnr": 30.0})
    job(tmp_path, 1, 1, '{"status": "ok", "recon')
    job(tmp_path, 2, 2, {"status": "running", "pid": dead_pid(), "host": socket.gethostname(), "stage1/steps": 5})
    t = tables.build(tmp_path, columns=["recon/psnr"])
    assert [(b["job"], b["status"]) for b in t["bad"]] == [("1", "corrupt"), ("2", "interrupted")]
    assert t["rows"][0]["n"] == 1 and t["rows"][0]["cells"]["recon/psnr"] == "30.00 (1)"
    md = (tmp_path / "table.md").read_text()
    assert "- job 1 ((all), seed=1): corrupt: metrics.json unreadable (JSONDecodeError)" in md
    assert "- job 2 ((all), seed=2): interrupted" in md


def test_evaluate_refuses_an_interrupted_run(tmp_path, capsys):
    run = tmp_path / "run"
    compose_cfg(["debug=fast"], output_dir=run)  # writes .hydra/config.yaml
    (run / "metrics.json").write_text(json.dumps({"status": "running", "pid": dead_pid(),
                                                  "host": socket.gethostname()}))
    ev = compose_cfg([f"run_dir={run}", "metrics.features=null"], config_name="evaluate", output_dir=tmp_path / "l")
    with pytest.raises(SystemExit) as e:
        cli.evaluate(ev)
    assert e.value.code == 2
    assert capsys.readouterr().err == (f"error: run_dir={run} is interrupted: its training did not finish; continue "
                                       f"it with `train.py resume={run} <its overrides>`, then evaluate it\n")


@pytest.mark.parametrize("stage", ["stage1", pytest.param("stage2", marks=pytest.mark.slow)])  # stage2: both stages
def test_a_real_divergence_ends_diverged(stage, make_cfg):
    """lr=1e30 on one stage: the loss becomes non-finite, the run is recorded `diverged` and returns (exit 0)."""
    key = "autoencoder.optimizer.lr" if stage == "stage1" else "diffusion.optimizer.lr"
    cfg = make_cfg(["debug=fast", "logger=none", "metrics.features=null", f"{key}=1e30"])
    assert train.main(cfg) is None
    m = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert m["status"] == "diverged" and m["error"].startswith(f"{stage.replace('stage', 'stage ')} ")
    assert ("stage1/steps" in m) == (stage == "stage2")  # a diverged stage 2 keeps stage 1's record
