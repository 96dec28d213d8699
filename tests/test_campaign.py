"""The converged campaign: plateau stopping, campaign records, merging machines, refusing foreign code, running only
what is missing (ldm.run.callbacks.Plateau, ldm.analysis.claims.records / campaign)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from ldm.analysis.claims import campaign, records
from ldm.errors import ConfigError, UserError
from ldm.run.callbacks import Plateau, StepBudget
from ldm.utils.steps import batches_done


# ---- the plateau rule -----------------------------------------------------------------------------------------
def test_plateau_rule_on_a_known_sequence():
    """Improvements count only beyond min_rel_improvement of the best; `patience` misses in a row stop; a NaN never
    improves; min_steps holds a stop back."""
    p = Plateau(patience=2, min_rel_improvement=0.1)
    stops = [p.update(s, v) for s, v in [(1, 10.0), (2, 8.0), (3, 7.5), (4, 6.0), (5, 5.9), (6, float("nan"))]]
    # 8 beats 10 by 20 %; 7.5 misses (6 % of 8); 6 beats 8 by 25 %; 5.9 misses; NaN misses -> stop at step 6
    assert stops == [False, False, False, False, False, True]
    assert (p.best, p.best_step, p.stopped_step) == (6.0, 4, 6)
    late = Plateau(patience=1, min_rel_improvement=0.0, min_steps=5)
    assert [late.update(s, 1.0) for s in (1, 2, 5)] == [False, False, True]
    up = Plateau(mode="max", patience=1, min_rel_improvement=0.0)
    assert [up.update(s, v) for s, v in [(1, 0.5), (2, 0.6), (3, 0.6)]] == [False, False, True]


@pytest.mark.parametrize("bad", [{"mode": "lowest"}, {"patience": 0}, {"min_rel_improvement": 1.5}])
def test_plateau_rejects_a_rule_that_cannot_mean_anything(bad):
    with pytest.raises(ValueError):
        Plateau(**bad)


def test_plateau_state_resumes_where_it_stopped():
    curve = [(s, max(1.0, 10.0 / s)) for s in range(1, 30)]  # flat from step 10: stops at 13
    whole = Plateau(patience=3, min_rel_improvement=0.05)
    stop_whole = next(s for s, v in curve if whole.update(s, v))
    first = Plateau(patience=3, min_rel_improvement=0.05)
    for s, v in curve[:8]:
        assert not first.update(s, v)
    second = Plateau(patience=3, min_rel_improvement=0.05)
    second.load_state_dict(json.loads(json.dumps(first.state_dict())))  # what a checkpoint carries
    stop_resumed = next(s for s, v in curve[8:] if second.update(s, v))
    assert stop_resumed == stop_whole == 13 and second.trace == whole.trace


class KnownCurve(L.LightningModule):
    """val/loss = max(1, 10 - step / 50): falls by 1 per 50 batches until step 450, then stays at 1."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.w - batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", max(1.0, 10.0 - batches_done(self.trainer) / 50.0))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 1)), batch_size=8)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 1)), batch_size=8)


def test_a_stage_stops_at_the_step_its_loss_curve_implies():
    """With validation every 50 batches, the curve's last improvement is at 450; three validations later (600) the
    rule stops training, far below the 2000-batch cap, and the trainer has run exactly 600 batches."""
    rule = Plateau(patience=3, min_rel_improvement=0.01)
    trainer = L.Trainer(callbacks=[StepBudget(2000), rule], max_steps=-1, max_epochs=-1, val_check_interval=50,
                        check_val_every_n_epoch=None, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(KnownCurve())
    assert (rule.best_step, rule.stopped_step, batches_done(trainer)) == (450, 600, 600)
    assert rule.summary("stage1", 2000) == {"stage1/stop": "plateau", "stage1/cap": 2000, "stage1/best_step": 450,
                                            "stage1/plateau_monitor": "val/loss"}


def test_adversarial_rows_get_no_plateau_rule(make_cfg):
    """A GAN's validation losses do not track quality: it trains to the cap even where a plateau rule is set."""
    from ldm.autoencoders.bigan import BiGAN
    from ldm.autoencoders.vae import VAE
    from ldm.run.stages import make_trainer

    cfg = make_cfg(["debug=fast", "logger=none", "stage1.plateau={monitor:val/loss,patience:2}"])
    assert VAE.plateau_signal and not BiGAN.plateau_signal
    with_rule = make_trainer(cfg, "stage1", [], 0, plateau_signal=True)
    without = make_trainer(cfg, "stage1", [], 0, plateau_signal=False)
    assert sum(isinstance(c, Plateau) for c in with_rule.callbacks) == 1
    assert not any(isinstance(c, Plateau) for c in without.callbacks)


def test_a_plateau_rule_is_part_of_the_stage_cache_key(make_cfg):
    from ldm.run.train import stage1_parts

    fixed = stage1_parts(make_cfg(["debug=fast"]))
    ruled = stage1_parts(make_cfg(["debug=fast", "stage1.plateau={monitor:val/loss,patience:2}"]))
    assert "plateau" not in fixed and ruled["plateau"]["patience"] == 2 and ruled["val_every"] == 2


# ---- records --------------------------------------------------------------------------------------------------
def tiny_profile(results: Path, root: Path, **kw) -> dict:
    return {"profile": "tiny", "label": "a test profile", "dir": str(root), "results": str(results), "merge": [],
            "seeds": "0,1,2", "common": ["logger=none"], "multiplicity": "holm", "threads": 1,
            "reproduce_rtol": 1e-6, "experiments": {"rows": ["data=digits", "autoencoder=ae,vae"]},
            "claims": {"C1": {"statement": "vae reconstructs better", "criterion": {
                "kind": "compare", "experiment": "rows", "a": {"autoencoder": "vae"}, "b": {"autoencoder": "ae"},
                "metric": "recon/psnr", "sign": 1}}}, **kw}


def fake_job_dir(base: Path, job: records.Job, psnr: float) -> Path:
    d = base / "jobs" / job.experiment / job.key
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": 0}))
    metrics = {"status": "ok", "recon/psnr": psnr, "stage1/steps": 750, "stage1/stop": "plateau", "stage1/cap": 4000,
               "stage1/best_step": 0, "stage1/wall_s": 1.0}
    (d / "metrics.json").write_text(json.dumps(metrics))
    return d


def psnr_of(job: records.Job) -> float:
    seed = int(job.key.rsplit("seed=", 1)[1])
    return 30.0 + 0.1 * seed if "vae" in job.key else 25.0 + 0.3 * seed ** 2


def record(job: records.Job, results: Path, tmp: Path, code: str | None = None, psnr: float | None = None) -> Path:
    dest = results / job.experiment / job.key
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = fake_job_dir(tmp / "src" / results.name, job, psnr_of(job) if psnr is None else psnr)
    records.write_record(src, dest, job, "tiny", code or records.code_hash(), "abc123", 2.0)
    return dest


def test_job_keys_name_the_swept_values_and_the_seed():
    jobs = records.jobs_of({"rows": ["data=digits", "autoencoder=ae,vae", "seed=0,1"],
                            "one": ["autoencoder=gan", "seed=3"]})
    assert [j.name for j in jobs] == ["rows/autoencoder=ae,seed=0", "rows/autoencoder=ae,seed=1",
                                      "rows/autoencoder=vae,seed=0", "rows/autoencoder=vae,seed=1", "one/seed=3"]
    assert jobs[0].overrides == ("data=digits", "autoencoder=ae", "seed=0")


def test_a_record_is_small_self_describing_and_world_readable(tmp_path):
    job = records.jobs_of({"rows": ["autoencoder=vae", "seed=0"]})[0]
    dest = record(job, tmp_path / "results", tmp_path)
    rec = json.loads((dest / "record.json").read_text())
    assert rec["overrides"] == ["autoencoder=vae", "seed=0"] and rec["status"] == "ok"
    assert rec["code_hash"] == records.code_hash() and rec["commit"] == "abc123" and rec["machine"]
    assert rec["stages"]["stage1"] == {"steps": 750, "stop": "plateau", "cap": 4000, "best_step": 0, "wall_s": 1.0}
    assert (dest / "config.yaml").is_file() and not list(dest.parent.glob(".*.tmp"))
    assert all((p.stat().st_mode & 0o777) == 0o644 for p in dest.iterdir())
    assert sum(p.stat().st_size for p in dest.iterdir()) < 10_000


def test_records_from_two_machines_merge_into_one_report(tmp_path):
    """Seeds 0-1 recorded on one machine, seed 2 on another (two folders): one report over all three seeds; the same
    job recorded twice with different numbers is refused, naming both."""
    a, b, view = tmp_path / "machine_a", tmp_path / "machine_b", tmp_path / "view"
    profile = tiny_profile(a, view, merge=[str(b)])
    jobs = campaign.plan(profile)
    for j in jobs:
        record(j, b if j.key.endswith("seed=2") else a, tmp_path)
    out = campaign.run(profile, view)
    assert out == {"claims/C1": "supported"}
    report = (view / "REPORT.md").read_text()
    assert "6 of 6 jobs have an accepted record" in report
    assert "| rows | autoencoder=vae | 3 | 750, 750, 750 (3 of 3 on the plateau, cap 4000) | – |" in report
    assert len(list((view / "rows").glob("*/metrics.json"))) == 6
    record(jobs[0], b, tmp_path / "again", psnr=99.0)
    with pytest.raises(ConfigError, match="two records with different numbers"):
        campaign.run(profile, view)


def test_a_foreign_code_hash_is_refused_until_a_reproduction_agrees(tmp_path):
    results = tmp_path / "results"
    profile = tiny_profile(results, tmp_path / "view")
    jobs = campaign.plan(profile)
    for j in jobs:
        record(j, results, tmp_path, code="0123456789abcdef")
    today = records.code_hash()
    found = records.read_records([results])
    assert len(records.census(jobs, found, records.accepted_hashes(results, today)).refused) == 6
    records.note_reproduction(results, "0123456789abcdef", today, jobs[0].name, False, ["recon/psnr: 1 vs 2"], 1e-6)
    assert len(records.census(jobs, found, records.accepted_hashes(results, today)).refused) == 6
    records.note_reproduction(results, "0123456789abcdef", today, jobs[0].name, True, [], 1e-6)
    assert len(records.census(jobs, found, records.accepted_hashes(results, today)).present) == 6
    # a record made for other overrides (the profile changed the job) is refused whatever its hash
    profile["common"] = ["logger=csv"]
    assert len(records.census(campaign.plan(profile), found, {today, "0123456789abcdef"}).refused) == 6


def test_agreement_ignores_timings_and_names_each_difference():
    old = {"recon/psnr": 30.0, "stage1/wall_s": 5.0, "gen/sec_per_sample": 0.1, "status": "ok", "stage1/key": "a"}
    same = {"recon/psnr": 30.0, "stage1/wall_s": 9.0, "gen/sec_per_sample": 0.3, "status": "ok", "stage1/key": "b"}
    assert records.agreement(old, same, 1e-6) == (True, [])
    ok, diffs = records.agreement(old, {**same, "recon/psnr": 30.1}, 1e-6)
    assert not ok and diffs == ["recon/psnr: 30.0 vs 30.1"]
    assert records.agreement({"x": math.nan}, {"x": math.nan}, 1e-6)[0]
    assert not records.agreement({"x": 1.0}, {}, 1e-6)[0]


def test_with_half_its_records_present_a_campaign_runs_only_the_other_half(tmp_path, monkeypatch):
    results = tmp_path / "results"
    profile = tiny_profile(results, tmp_path / "view", run=True)
    jobs = campaign.plan(profile)
    have, want = jobs[::2], jobs[1::2]
    for j in have:
        record(j, results, tmp_path)
    ran = []

    def fake(self, job):  # stands in for train.py: the job "runs" and lands its record
        ran.append(job.name)
        record(job, results, tmp_path / "ran")

    monkeypatch.setattr(campaign.Recorder, "__call__", fake)
    campaign.run(profile, tmp_path / "view")
    assert sorted(ran) == sorted(j.name for j in want)
    ran.clear()
    campaign.run(profile, tmp_path / "view")  # everything recorded: nothing runs
    assert ran == []


def test_a_view_never_replaces_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "view" / "rows").mkdir(parents=True)
    (tmp_path / "view" / "rows" / "precious.txt").write_text("a user's sweep")
    with pytest.raises(ConfigError, match="not made from records"):
        records.materialize([], tmp_path / "view", ["rows"])
    assert (tmp_path / "view" / "rows" / "precious.txt").is_file()


def test_reproduce_names_a_recorded_job(tmp_path):
    profile = tiny_profile(tmp_path / "results", tmp_path / "view", reproduce="rows/nope")
    with pytest.raises(ConfigError, match="no recorded job"):
        campaign.run(profile, tmp_path / "view")


@pytest.mark.slow
def test_reproduction_check_reruns_a_job_and_accepts_or_refuses(tmp_path):
    """A real job (debug=fast, stage 1 only) recorded by a campaign run; its record then claims a foreign code hash:
    refused. A reproduction with a tampered number disagrees (error, still refused); with the true numbers it
    agrees, and the foreign hash's records are accepted."""
    results, view = tmp_path / "results", tmp_path / "view"
    profile = tiny_profile(results, view, run=True, seeds="0", common=["debug=fast", "logger=none"],
                           experiments={"rows": ["autoencoder=ae", "stage=stage1"]},
                           claims={"C1": {"statement": "s", "criterion": {
                               "kind": "threshold", "experiment": "rows", "row": {"autoencoder": "ae"},
                               "metric": "recon/psnr", "value": 0.0, "sign": 1}}})
    campaign.run(profile, view)
    path = next(results.glob("rows/*/record.json"))
    rec = json.loads(path.read_text())
    assert rec["status"] == "ok" and rec["code_hash"] == records.code_hash()
    truth = rec["metrics"]["recon/psnr"]
    path.write_text(json.dumps({**rec, "code_hash": "feedfacefeedface",
                                "metrics": {**rec["metrics"], "recon/psnr": truth + 1.0}}))
    profile["run"] = False
    campaign.run(profile, view)
    assert "0 of 1 jobs have an accepted record" in (view / "REPORT.md").read_text()
    name = f"rows/{rec['key']}"
    with pytest.raises(UserError, match="other numbers.*recon/psnr"):
        campaign.run({**profile, "reproduce": name}, view)
    path.write_text(json.dumps({**rec, "code_hash": "feedfacefeedface"}))
    assert campaign.run({**profile, "reproduce": name}, view) == {"claims/reproduced": name}
    checks = json.loads((results / records.REPRODUCED).read_text())["checks"]
    assert [c["agrees"] for c in checks] == [False, True]
    campaign.run(profile, view)
    assert "1 of 1 jobs have an accepted record" in (view / "REPORT.md").read_text()


def test_a_reproduction_compares_with_the_records_code_rerun_here_when_git_has_it(tmp_path, monkeypatch):
    """Floats depend on the CPU as well as the code (~1e-5 relative between a record made on an Intel Xeon and the
    same code rerun on an AMD EPYC). Where the record's code can be rerun here, today's numbers are compared with that
    rerun, so the check sees the code change alone: a record 1e-5 away from this machine's rerun of its own code
    is accepted when today's code gives the rerun's numbers, and refused when today's code moves them. The
    record's distance from the rerun is kept in the evidence, as this machine's drift."""
    results = tmp_path / "results"
    profile = tiny_profile(results, tmp_path / "view")
    jobs = campaign.plan(profile)
    for j in jobs:
        record(j, results, tmp_path, code="0123456789abcdef")
    name = jobs[0].name
    recorded = records.read_records([results])[name]["metrics"]["recon/psnr"]
    here = {"status": "ok", "recon/psnr": recorded * (1 + 1e-5)}  # this machine rounds differently
    today = {"value": here}
    at_record = campaign._rerun_at_record
    monkeypatch.setattr(campaign, "_rerun", lambda job, work, threads, code: dict(today["value"]))
    monkeypatch.setattr(campaign, "_rerun_at_record", lambda rec, job, work, threads, here_: (dict(here), ""))
    assert campaign.run({**profile, "reproduce": name}, tmp_path / "view") == {"claims/reproduced": name}
    check = json.loads((results / records.REPRODUCED).read_text())["checks"][-1]
    assert check["agrees"] and check["against"] == "the record's code rerun on this machine"
    assert check["record_vs_rerun_of_its_code"][0].startswith("recon/psnr: ")
    today["value"] = {**here, "recon/psnr": recorded * (1 + 1e-3)}  # today's code changed the number
    with pytest.raises(UserError, match="other numbers than the record's code rerun on this machine"):
        campaign.run({**profile, "reproduce": name}, tmp_path / "view")
    # without the record's code (here: its commit is no clean one), the record itself is the reference
    rec = records.read_records([results])[name]
    assert at_record({**rec, "commit": "abc123+dirty"}, jobs[0], tmp_path, 1, Path(".")) == \
        (None, "its commit abc123+dirty is not a clean one")
    assert at_record({**rec, "commit": "f" * 40}, jobs[0], tmp_path, 1, Path("."))[1].endswith("is not in this clone")
