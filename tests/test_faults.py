"""The error contract under faults a cluster and a tired user produce (one test per case of the faults issue;
signals, which need a real process, are in tests/test_cli.py): directory ownership, stale re-evaluations,
resume of another experiment, wrong types and ranges, memory-bound sizes, tampered exports, damaged sweep files,
file modes, temporaries."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from pathlib import Path

import pytest
import yaml

from ldm.errors import ConfigError
from ldm.run import schema
from tests.conftest import CONF, compose_cfg


# ---- a directory is owned by one run --------------------------------------------------------------------------
def test_a_run_refuses_a_directory_that_holds_another_runs_record(tmp_path, capsys):
    """Case 3/4: a reused run directory (a second sweep into one folder, two runs in the same second): exit 2 and
    one error line before anything is written; the first run's record is byte-identical afterwards."""
    from ldm.run.task import run_task

    run = tmp_path / "run"
    cfg = compose_cfg(["debug=fast", "logger=none"], output_dir=run)
    first = json.dumps({"status": "ok", "recon/psnr": 30.0, "started": "2026-12-03T10:00:00"})
    (run / "metrics.json").write_text(first)
    called = []
    with pytest.raises(SystemExit) as e:
        run_task(cfg, lambda cfg, report: called.append(1) or {}, run / "metrics.json")
    assert e.value.code == 2 and not called
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "already holds a run (status ok" in err[0] and "resume=" in err[0]
    assert (run / "metrics.json").read_text() == first


def test_the_default_directories_are_unique_beyond_the_second():
    hydra = yaml.safe_load((CONF / "hydra" / "default.yaml").read_text())
    assert "%f" in hydra["run"]["dir"] and "%f" in hydra["sweep"]["dir"]


def test_a_leftover_eval_json_of_another_training_is_not_this_jobs(tmp_path):
    """Case 3: an eval.json that evaluated other stages (a leftover of the sweep that used the folder before) is
    ignored and named; one whose stage keys are the job's is used."""
    from ldm.analysis.collect import collect

    for i, (key, eval_key) in enumerate([("ae-stage1", "vae-stage1"), ("vae-stage1", "vae-stage1")]):
        job = tmp_path / str(i)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"autoencoder={'ae' if i == 0 else 'vae'}"]))
        (job / "metrics.json").write_text(json.dumps({"status": "ok", "recon/psnr": 20.0 + i, "stage1/key": key}))
        (job / "eval.json").write_text(json.dumps({"status": "ok", "recon/psnr": 99.0, "eval/of_stage1_key": eval_key,
                                                   "eval/of_stage2_key": None}))
    records, _ = collect(tmp_path)
    assert [(r["re_evaluated"], r["stale_eval"], r["metrics"]["recon/psnr"]) for r in records] == \
        [(False, True, 20.0), (True, False, 99.0)]


# ---- resume= resumes the same experiment ----------------------------------------------------------------------
def stopped_run(tmp_path: Path, overrides: list[str], status: dict, ckpt: Path) -> Path:
    run = tmp_path / "stopped"
    compose_cfg(overrides, output_dir=run)
    (run / "metrics.json").write_text(json.dumps(status))
    (run / "checkpoints" / "stage1").mkdir(parents=True)
    shutil.copyfile(ckpt, run / "checkpoints" / "stage1" / "last.ckpt")
    return run


@pytest.mark.parametrize("change, named", [
    ("autoencoder.kl_weight=0.5", "autoencoder.kl_weight: 1e-06 there, 0.5 here"),
    ("seed=7", "seed: 0 there, 7 here"),
    ("stage1.max_steps=9", "stage1.max_steps: 4 there, 9 here"),
])
def test_resume_refuses_another_experiment_naming_the_field(tmp_path, change, named, fast_run):
    """Case 5: a resume with settings that change what is trained is refused, the field and both values named."""
    from ldm.run.preflight import resume_from

    run = stopped_run(tmp_path, ["debug=fast"], {"status": "interrupted"},
                      fast_run / "checkpoints" / "stage1" / "last.ckpt")
    with pytest.raises(ConfigError, match="trained another experiment") as e:
        resume_from(compose_cfg(["debug=fast", change, f"resume={run}"], output_dir=tmp_path / "new"))
    assert named in str(e.value)
    # where files go, logging and evaluation settings do not matter to what is trained
    same = compose_cfg(["debug=fast", "logger=csv", "metrics.num_samples=50", f"resume={run}"],
                       output_dir=tmp_path / "new2")
    assert resume_from(same)[0] == str(run / "checkpoints" / "stage1" / "last.ckpt")


def test_resume_refuses_a_run_that_is_still_alive(tmp_path, fast_run):
    from ldm.run.preflight import resume_from

    run = stopped_run(tmp_path, ["debug=fast"], {"status": "running", "pid": os.getpid(),
                                                  "host": socket.gethostname()},
                      fast_run / "checkpoints" / "stage1" / "last.ckpt")
    with pytest.raises(ConfigError, match=f"still running \\(pid {os.getpid()}"):
        resume_from(compose_cfg(["debug=fast", f"resume={run}"], output_dir=tmp_path / "new"))


# ---- types and ranges, before training -----------------------------------------------------------------------
@pytest.mark.parametrize("config, override, message", [
    ("train", "metrics.num_samples=abc", "metrics.num_samples='abc' must be an integer >= 3"),
    ("train", "seed=abc", "seed='abc' must be an integer >= 0"),
    ("train", "seed=-1", "seed=-1 must be an integer >= 0"),
    ("train", "autoencoder.optimizer.lr=nan", "autoencoder.optimizer.lr=nan must be a finite number > 0"),
    ("train", "autoencoder.optimizer.lr=-1", "autoencoder.optimizer.lr=-1 must be a finite number > 0"),
    ("train", "diffusion.optimizer.lr=0", "diffusion.optimizer.lr=0 must be a finite number > 0"),
    ("train", "threads=abc", "threads='abc' must be an integer >= 1"),
    ("train", "data.image_size=abc", "data.image_size='abc' must be an integer >= 4"),
    ("train", "stage2.batch_size=1.5", "stage2.batch_size=1.5 must be an integer >= 1"),
    ("evaluate", "metrics.num_samples=0", "metrics.num_samples=0 must be an integer >= 3"),
    ("evaluate", "table.columns=recon/psnr", "table.columns='recon/psnr' must be a list of strs"),
    ("evaluate", "seed=abc", "seed='abc' must be an integer >= 0"),
    ("sample", "num_samples=0", "num_samples=0 must be an integer >= 1"),
    ("sample", "steps=abc", "steps='abc' must be an integer >= 1"),
])
def test_wrong_types_and_ranges_are_one_error_before_anything_runs(config, override, message):
    """Cases 6 and 8: every such value is a ConfigError naming setting, value and what it must be."""
    spec = {"train": schema.TRAIN, "evaluate": schema.EVALUATE, "sample": schema.SAMPLE}[config]
    cfg = compose_cfg([override], config_name=config)
    with pytest.raises(ConfigError) as e:
        schema.validate(cfg, spec)
    assert str(e.value).startswith(message)
    schema.validate(compose_cfg([], config_name=config), spec)  # the defaults pass
    schema.validate(compose_cfg(["table.columns=[recon/psnr]"], config_name="evaluate"), schema.EVALUATE)


def test_a_sample_count_whose_distance_matrix_cannot_fit_is_refused(monkeypatch):
    """Case 7: metrics.num_samples=100000 needs a 74.5 GiB n x n matrix: refused before training, with the
    largest n this machine allows."""
    monkeypatch.setattr(schema, "memory_bytes", lambda: 24 * 2**30)
    with pytest.raises(ConfigError, match=r"100000 needs an n x n distance matrix of 74.5 GiB.*~40,132 here"):
        schema.check_memory(100000)
    schema.check_memory(2000)
    schema.check_memory(None)


# ---- outside data: exports, sweep files ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, fast_run) -> Path:
    from ldm.run.export import export
    from ldm.run.loading import load

    out = tmp_path_factory.mktemp("export") / "model"
    export(load(fast_run), out, source=str(fast_run))
    return out


@pytest.mark.parametrize("tamper, message", [
    (lambda m: {**m, "extra": 1}, "unknown keys"),
    (lambda m: {k: v for k, v in m.items() if k != "config"}, "missing keys"),
    (lambda m: [m], "holds a list"),
    (lambda m: {**m, "autoencoder": {**m["autoencoder"], "hparams": None}}, "autoencoder must be"),
    (lambda m: {**m, "class_names": "0123"}, "class_names is not a list"),
    (lambda m: {**m, "autoencoder": {**m["autoencoder"], "hparams": {"nope": 1}}}, "do not build"),
    (lambda m: {**m, "autoencoder": {**m["autoencoder"], "class": "lightning.pytorch.Trainer"}},
     "is not a LatentModel"),
    (lambda m: {**m, "autoencoder": {**m["autoencoder"], "class": "ldm.data.digits.DigitsDataModule"}},
     "is not a LatentModel"),
])
def test_a_tampered_model_json_is_one_error_and_builds_nothing(export_dir, tmp_path, tamper, message, monkeypatch):
    """Case 10: extra or missing keys, null hparams, a list, a class that is no model: a ConfigError, and a Trainer
    named as the class is never constructed."""
    import lightning

    from ldm.run.loading import load_export

    built = []
    monkeypatch.setattr(lightning.Trainer, "__init__", lambda self, *a, **k: built.append(1))
    bad = tmp_path / "model"
    shutil.copytree(export_dir, bad)
    meta = json.loads((bad / "model.json").read_text())
    (bad / "model.json").write_text(json.dumps(tamper(meta)))
    with pytest.raises(ConfigError, match=message):
        load_export(bad)
    assert not built
    assert load_export(export_dir).autoencoder is not None  # the untampered export still loads


def test_a_truncated_overrides_yaml_is_listed_not_fatal(tmp_path):
    """Case 12: one job's overrides.yaml cut short: the table is built, that job listed as corrupt."""
    from ldm.analysis import tables
    from ldm.analysis.collect import collect

    for i in range(3):
        job = tmp_path / str(i)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- autoencoder=vae\n- seed={i}\n")
        (job / "metrics.json").write_text(json.dumps({"status": "ok", "recon/psnr": 20.0 + i}))
    (tmp_path / "2" / ".hydra" / "overrides.yaml").write_text("- autoencoder=vae\n- ")
    records, _ = collect(tmp_path)
    assert [r["status"] for r in records] == ["ok", "ok", "corrupt"]
    assert "overrides.yaml is damaged" in records[2]["error"]
    tables.build(tmp_path, ["recon/psnr"])
    assert "overrides.yaml is damaged" in (tmp_path / "table.md").read_text()


# ---- files readable as the umask says; no temporaries left ----------------------------------------------------
def test_results_are_written_with_the_umask_mode(tmp_path):
    """Case 13: atomic writes go through mkstemp (0600); the final file has the umask's mode (0644 under 022), so a
    group sharing a results folder can read it."""
    from ldm.utils import io

    current = os.umask(0)
    os.umask(current)
    if current & 0o044:
        pytest.skip(f"umask {current:03o} hides files from the group anyway")
    assert io.UMASK == current
    path = io.write_json(tmp_path / "metrics.json", {"a": 1})
    assert path.stat().st_mode & 0o777 == 0o666 & ~current != 0o600


def test_samples_on_a_full_disk_leave_no_temporary(tmp_path, monkeypatch):
    """Case 13: the write fails half-way (ENOSPC): neither the output nor its temporary folder is left."""
    import errno

    import torch

    from ldm.run import sample

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sample, "save_npz", full)
    with pytest.raises(OSError):
        sample.write(torch.zeros(4, 1, 8, 8), None, tmp_path / "out", overwrite=False)
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_write_that_fails_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    """Case 11, at the source: a disk that fills while a checkpoint is written. Lightning's own writer opens the
    final name and writes into it (a torn file under that name); ours writes beside it and renames."""
    import errno

    import torch
    from lightning.fabric.plugins.io import torch_io

    from ldm.utils.checkpoint import AtomicCheckpointIO, read

    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, path)
    before = path.read_bytes()
    real = torch_io._atomic_save

    def fills_the_disk(checkpoint, filepath):
        real(checkpoint, filepath)
        with open(filepath, "r+b") as f:  # what a full disk leaves: the first half of the bytes
            f.truncate(os.path.getsize(filepath) // 2)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch_io, "_atomic_save", fills_the_disk)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "global_step": 2}, path)
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
    assert read(path, "ckpt")["global_step"] == 1
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def test_a_killed_writers_temporaries_are_removed_when_the_stage_starts_again(tmp_path):
    """SIGKILL mid-write runs no cleanup: the `.tmp` stays (never under a final name, so nothing reads it) until
    the stage starts again in that directory, which removes it and keeps every real checkpoint."""
    from ldm.utils.checkpoint import remove_stale_temporaries

    folder = tmp_path / "checkpoints" / "stage1"
    folder.mkdir(parents=True)
    (folder / "last.ckpt").write_bytes(b"whole")
    (folder / ".last.ckpt.k3j2_x.tmp").write_bytes(b"half")
    assert [p.name for p in remove_stale_temporaries(folder)] == [".last.ckpt.k3j2_x.tmp"]
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]
    assert remove_stale_temporaries(tmp_path / "absent") == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_every_stage_trainer_writes_checkpoints_atomically(tmp_path):
    from ldm.run.stages import make_trainer
    from ldm.utils.checkpoint import AtomicCheckpointIO

    cfg = compose_cfg(["debug=fast", "logger=none"], output_dir=tmp_path / "run")
    assert isinstance(make_trainer(cfg, "stage1", []).strategy.checkpoint_io, AtomicCheckpointIO)


def test_a_torn_last_ckpt_falls_back_to_the_newest_intact_checkpoint(tmp_path, fast_run):
    """Case 11: a last.ckpt cut short (a full disk while it was written) no longer blocks resume=: training
    continues from the newest checkpoint of the stage that reads back whole; with none, the error says so."""
    from ldm.run.preflight import resume_from

    run = tmp_path / "stopped"
    shutil.copytree(fast_run, run)
    shutil.rmtree(run / "checkpoints" / "stage2")
    stage1 = run / "checkpoints" / "stage1"
    for old in stage1.glob("best-*.ckpt"):
        old.unlink()
    good = stage1 / "best-step000002.ckpt"
    shutil.copyfile(stage1 / "last.ckpt", good)
    data = (stage1 / "last.ckpt").read_bytes()
    (stage1 / "last.ckpt").write_bytes(data[: len(data) // 2])
    (run / "metrics.json").write_text(json.dumps({"status": "interrupted"}))
    cfg = compose_cfg(["debug=fast", "logger=none", "seed=1", f"resume={run}"], output_dir=tmp_path / "new")
    assert resume_from(cfg) == (str(good), None, None)
    good.write_bytes(b"torn too")
    with pytest.raises(ConfigError, match="has no checkpoint yet"):
        resume_from(cfg)


def test_a_search_for_a_metric_its_runs_never_report_is_refused():
    """An Optuna search optimising gen/fid while training stage 1 only would fail every trial: refused first."""
    from ldm.run.preflight import check_optimized_metric

    with pytest.raises(ConfigError, match="optimized_metric=gen/fid is measured on stage 2"):
        check_optimized_metric(compose_cfg(["hparams_search=vae_optuna", "stage=stage1"]))
    with pytest.raises(ConfigError, match="needs evaluator features"):
        check_optimized_metric(compose_cfg(["hparams_search=vae_optuna", "metrics.features=null"]))
    check_optimized_metric(compose_cfg(["hparams_search=vae_optuna"]))
    check_optimized_metric(compose_cfg(["stage=stage1"]))  # no search: nothing is optimised


def test_a_mismatch_with_the_same_summary_names_the_tensors_that_differ():
    """Case 5's message: two modules that describe alike ('Linear') but differ in width used to print the same
    words on both sides; now the tensor and both shapes are named."""
    import torch

    from ldm.utils.checkpoint import check_fits

    with pytest.raises(ConfigError) as e:
        check_fits(torch.nn.Linear(2, 3), torch.nn.Linear(2, 4), "ckpt", "a.ckpt")
    assert str(e.value) == ("ckpt=a.ckpt holds a Linear as the config asks, but its tensors differ from the "
                            "configured module's: 2 shape mismatches (first: weight (3, 2) vs (4, 2)) (checkpoint vs "
                            "config): pass a checkpoint trained with this config, or change the config to match the "
                            "checkpoint")
    with pytest.raises(ConfigError, match="holds a Linear, but the config asks for a Conv1d"):
        check_fits(torch.nn.Linear(2, 3), torch.nn.Conv1d(2, 3, 1), "ckpt", "a.ckpt")
    check_fits(torch.nn.Linear(2, 3), torch.nn.Linear(2, 3), "ckpt", "a.ckpt")  # fits: no error


# ---- resume=auto and SLURM requeue ----------------------------------------------------------------------------

def _stopped_copy(fast_run: Path, where: Path, record: dict, checkpoints: bool = True) -> Path:
    shutil.copytree(fast_run, where)
    if not checkpoints:
        shutil.rmtree(where / "checkpoints")
    (where / "metrics.json").write_text(json.dumps(record))
    return where


@pytest.mark.parametrize("record, checkpoints, resumes, fresh", [
    ({"status": "interrupted"}, True, True, False),     # stopped with a checkpoint: continue it in place
    ({"status": "interrupted"}, False, False, True),    # stopped before its first checkpoint: start afresh
    ({"status": "ok"}, True, False, False),             # finished: left to check_owner, which refuses it
    ({"status": "failed"}, True, False, False),
])
def test_resume_auto_continues_only_a_stopped_run_of_its_own_directory(record, checkpoints, resumes, fresh,
                                                                       tmp_path, fast_run, monkeypatch):
    from ldm.run.task import AUTO_RESUME_ENV, DirectoryTaken, auto_resume, check_owner

    monkeypatch.delenv(AUTO_RESUME_ENV, raising=False)
    run = _stopped_copy(fast_run, tmp_path / "run", record, checkpoints)
    cfg = compose_cfg(["debug=fast", "logger=none", "resume=auto"], output_dir=run)
    auto_resume(cfg, run / "metrics.json")
    assert cfg.resume == (str(run) if resumes else None) and bool(cfg.get("overwrite")) == fresh
    if resumes or fresh:
        check_owner(cfg, run / "metrics.json")  # its own directory: accepted
    else:
        with pytest.raises(DirectoryTaken, match=re.escape(f"already holds a run (status {record['status']}")):
            check_owner(cfg, run / "metrics.json")
    empty = compose_cfg(["debug=fast", "logger=none", "resume=auto"], output_dir=tmp_path / "new")
    auto_resume(empty, tmp_path / "new" / "metrics.json")
    assert empty.resume is None  # nothing there: a fresh run


def test_a_requeued_slurm_attempt_reads_its_earlier_attempt_as_stopped(tmp_path, fast_run, monkeypatch):
    """A `running` record from another host is normally taken as alive (its pid cannot be checked); when it is an
    earlier attempt of this very SLURM job (same job id, lower restart count) it is stopped, and the requeued job
    continues it without resume= typed. The same record seen by another job, or by the same attempt, stays alive."""
    from ldm.run.task import AUTO_RESUME_ENV, auto_resume
    from ldm.rundir import run_status

    monkeypatch.delenv(AUTO_RESUME_ENV, raising=False)
    record = {"status": "running", "pid": 1, "host": "node-a", "slurm_job": "77_3", "slurm_restart": 0}
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert run_status(record) == "interrupted"
    assert run_status({**record, "slurm_job": "77_4"}) == "running"   # another array task's live run
    assert run_status({**record, "slurm_restart": 1}) == "running"    # this attempt's own record
    run = _stopped_copy(fast_run, tmp_path / "run", record)
    cfg = compose_cfg(["debug=fast", "logger=none"], output_dir=run)
    auto_resume(cfg, run / "metrics.json")
    assert cfg.resume == str(run)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")  # a first attempt never resumes by itself
    cfg = compose_cfg(["debug=fast", "logger=none"], output_dir=run)
    auto_resume(cfg, run / "metrics.json")
    assert cfg.resume is None
