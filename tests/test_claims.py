"""The claims engine on hand-made sweeps with known answers: a clear effect is supported, a clear opposite effect
contradicted, overlapping intervals inconclusive, a missing or failed job leaves the claim undecided and named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ldm.analysis import sweep_jobs
from ldm.analysis.claims import criteria, estimate, figures, publish, render, runner
from ldm.errors import ConfigError


def make_sweep(root: Path, experiment: str, rows: dict[str, list], key: str = "autoencoder",
               metric: str = "gen/fid", status: dict | None = None) -> None:
    """rows: value of `key` -> per-seed metric values; status: {(value, seed): 'failed'} for broken jobs."""
    n = 0
    for value, vals in rows.items():
        for seed, v in enumerate(vals):
            job = root / experiment / str(n)
            (job / ".hydra").mkdir(parents=True)
            (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"{key}={value}", f"seed={seed}"]))
            st = (status or {}).get((value, seed), "ok")
            m = {"status": st, metric: v} if st == "ok" else {"status": st, "error": "RuntimeError: boom"}
            (job / "metrics.json").write_text(json.dumps(m))
            n += 1


def cmp(sign=-1, margin=0.0):
    return {"kind": "compare", "experiment": "rows", "metric": "gen/fid", "a": {"autoencoder": "vae"},
            "b": {"autoencoder": "gan"}, "sign": sign, "margin": margin}


def test_compare_supported_contradicted_inconclusive(tmp_path):
    make_sweep(tmp_path / "clear", "rows", {"vae": [1.0, 1.1, 0.9], "gan": [5.0, 5.2, 4.8]})
    make_sweep(tmp_path / "opposite", "rows", {"vae": [5.0, 5.2, 4.8], "gan": [1.0, 1.1, 0.9]})
    make_sweep(tmp_path / "overlap", "rows", {"vae": [1.0, 3.0, 2.0], "gan": [1.5, 2.5, 2.2]})
    got = {d: criteria.decide(cmp(), criteria.Sweeps(tmp_path / d)).verdict for d in ("clear", "opposite", "overlap")}
    assert got == {"clear": "supported", "opposite": "contradicted", "overlap": "inconclusive"}
    # a margin the effect does not clear: the interval includes the threshold -> inconclusive, not supported
    assert criteria.decide(cmp(margin=4.5), criteria.Sweeps(tmp_path / "clear")).verdict == "inconclusive"
    f = criteria.decide(cmp(), criteria.Sweeps(tmp_path / "clear"))
    assert f.numbers["difference"]["test"] == "paired t" and f.numbers["difference"]["diff"] == pytest.approx(-4.0)
    assert "autoencoder=vae − autoencoder=gan = -4" in f.text


def test_relative_non_inferiority_margin(tmp_path):
    """'a is worse than b by less than 10 % of b' (sign -1, margin -0.1, relative): within -> supported, wholly
    beyond the bound -> contradicted, straddling it -> inconclusive; a worse-but-within result is not contradicted."""
    within = {"vae": [10.3, 10.5, 10.4], "gan": [10.0, 10.1, 9.9]}       # +4 %
    beyond = {"vae": [13.0, 13.2, 12.8], "gan": [10.0, 10.1, 9.9]}       # +30 %
    straddle = {"vae": [10.2, 11.8, 11.0], "gan": [10.0, 10.1, 9.9]}     # +10 % with a wide interval
    for name, rows in (("within", within), ("beyond", beyond), ("straddle", straddle)):
        make_sweep(tmp_path / name, "rows", rows)
    crit = {**cmp(sign=-1, margin=-0.1), "relative": True}
    got = {d: criteria.decide(crit, criteria.Sweeps(tmp_path / d)).verdict for d in ("within", "beyond", "straddle")}
    assert got == {"within": "supported", "beyond": "contradicted", "straddle": "inconclusive"}
    assert "claimed < 1 (10 % of autoencoder=gan)" in criteria.decide(crit, criteria.Sweeps(tmp_path / "within")).text


def test_missing_or_failed_jobs_leave_the_claim_undecided_and_named(tmp_path):
    make_sweep(tmp_path, "rows", {"vae": [1.0, 1.1, 0.9], "gan": [5.0, 5.2, 4.8]}, status={("gan", 1): "failed"})
    f = criteria.decide(cmp(), criteria.Sweeps(tmp_path))
    assert f.verdict == "undecided" and "job rows/4 (autoencoder=gan, seed=1) is failed" in f.text
    f = criteria.decide({**cmp(), "experiment": "nope"}, criteria.Sweeps(tmp_path))
    assert f.verdict == "undecided" and "experiment `nope` has no sweep directory" in f.text
    f = criteria.decide({**cmp(), "b": {"autoencoder": "bigan"}}, criteria.Sweeps(tmp_path))
    assert f.verdict == "undecided" and "no job of `rows` has autoencoder=bigan" in f.text


def test_threshold_and_trend(tmp_path):
    make_sweep(tmp_path, "rows", {"vae": [0.5, 0.6, 0.55]})
    th = {"kind": "threshold", "experiment": "rows", "metric": "gen/fid", "row": {"autoencoder": "vae"},
          "value": 1.0, "sign": -1}
    assert criteria.decide(th, criteria.Sweeps(tmp_path)).verdict == "supported"
    assert criteria.decide({**th, "sign": 1}, criteria.Sweeps(tmp_path)).verdict == "contradicted"
    assert criteria.decide({**th, "value": 0.55}, criteria.Sweeps(tmp_path)).verdict == "inconclusive"
    betas = {"0.0": [0.01, 0.012, 0.011], "0.01": [0.02, 0.021, 0.019], "0.1": [0.04, 0.041, 0.039],
             "1.0": [0.08, 0.082, 0.079]}
    make_sweep(tmp_path, "beta", betas, key="autoencoder.kl_weight", metric="recon/mse")
    tr = {"kind": "trend", "experiment": "beta", "x": "autoencoder.kl_weight", "metric": "recon/mse", "sign": 1,
          "min_rho": 0.5}
    f = criteria.decide(tr, criteria.Sweeps(tmp_path))
    from scipy.stats import spearmanr

    x = [float(k) for k, v in betas.items() for _ in v]
    expected = spearmanr(x, [y for v in betas.values() for y in v]).statistic  # ties in x: average ranks
    assert f.verdict == "supported" and f.numbers["spearman"]["rho"] == pytest.approx(expected)
    assert f.numbers["spearman"]["n"] == 12 and f.numbers["spearman"]["lo"] > 0.5
    assert criteria.decide({**tr, "sign": -1}, criteria.Sweeps(tmp_path)).verdict == "contradicted"
    flat = {k: [0.05, 0.02, 0.08] for k in betas}  # no trend: the interval straddles 0
    make_sweep(tmp_path, "flat", flat, key="autoencoder.kl_weight", metric="recon/mse")
    assert criteria.decide({**tr, "experiment": "flat"}, criteria.Sweeps(tmp_path)).verdict == "inconclusive"


def test_all_of_and_the_report_is_byte_stable(tmp_path):
    make_sweep(tmp_path, "rows", {"vae": [1.0, 1.1, 0.9], "gan": [5.0, 5.2, 4.8]})
    th = {"kind": "threshold", "experiment": "rows", "metric": "gen/fid", "row": {"autoencoder": "gan"},
          "value": 1.0, "sign": 1}
    cfg = {"profile": "test", "label": "hand-made sweeps",
           "claims": {"C1": {"statement": "vae beats gan", "criterion_text": "FID difference < 0",
                             "criterion": cmp()},
                      "C2": {"statement": "both", "criterion": {"kind": "all", "of": [cmp(), th]}},
                      "C3": {"statement": "mixed", "criterion": {"kind": "all", "of": [cmp(), {**th, "sign": -1}]}}}}
    found = criteria.verdicts(cfg, tmp_path)
    assert {k: v.verdict for k, v in found.items()} == {"C1": "supported", "C2": "supported", "C3": "contradicted"}
    a = render.report(cfg, tmp_path, found, ["make claims"])
    b = render.report(cfg, tmp_path, criteria.verdicts(cfg, tmp_path), ["make claims"])
    assert a == b and "| C1 | vae beats gan | **supported** |" in a and "Criterion (stated before the run): FID" in a
    json.dumps(render.json_ready(found))  # serialisable
    with pytest.raises(ConfigError, match="kind="):
        criteria.decide({"kind": "vibes"}, criteria.Sweeps(tmp_path))
    with pytest.raises(ConfigError, match="lists no claims"):
        criteria.verdicts({"claims": {}}, tmp_path)


def test_profile_config_and_report_command(tmp_path, capsys):
    """conf/claims/quick.yaml composes, every claim has a statement, a pre-stated criterion text and a criterion of a
    known kind; `evaluate.py claims=quick` on a directory without sweeps writes a report where every claim is
    undecided and says why, and a dry run lists the jobs without running anything."""
    from omegaconf import OmegaConf

    from ldm.analysis.claims.runner import claims_report

    root = Path(__file__).resolve().parents[1]
    profile = yaml.safe_load((root / "conf" / "claims" / "quick.yaml").read_text())
    for name, c in profile["claims"].items():
        assert c["statement"] and c["criterion_text"] and c["criterion"]["kind"] in criteria.KINDS, name
    profile["dir"] = str(tmp_path / "claims")
    cfg = OmegaConf.create({"claims": {**profile, "dry_run": True}})
    assert claims_report(cfg) == {} and not (tmp_path / "claims").exists()
    out = capsys.readouterr().out
    assert "27 jobs in 5 experiments" in out and " min here (" in out
    cfg = OmegaConf.create({"claims": profile})
    out = claims_report(cfg)
    assert set(out.values()) == {"undecided"} and len(out) == 7
    text = (tmp_path / "claims" / "REPORT.md").read_text()
    assert "experiment `rows` has no sweep directory" in text and "## Reproduce" in text
    assert json.loads((tmp_path / "claims" / "verdicts.json").read_text())["C1"]["verdict"] == "undecided"


def test_profile_time_estimate_counts_each_jobs_stages():
    """The dry run's estimate: a latent job pays both stages, a gan job no stage 2, a stage-1-only job no stage 2,
    the pixel row its own (slower) stage-2 rate; n_jobs side by side divide the wall time."""
    r = {"stage1_steps_per_s": 10.0, "stage2_steps_per_s": 20.0, "pixel_stage2_steps_per_s": 1.0, "gpu_step_s": 0.01,
         "gen_sec_per_sample": 0.01, "pixel_gen_sec_per_sample": 0.1, "fixed_s": 5.0}
    common = ["stage1.max_steps=100", "stage2.max_steps=200", "metrics.num_samples=100"]
    assert estimate.estimate_job_s(sweep_jobs.expand(common + ["autoencoder=vae"])[0], {}, r) == 5 + 10 + 10 + 1
    assert estimate.estimate_job_s(sweep_jobs.expand(common + ["autoencoder=gan"])[0], {}, r) == 5 + 10
    assert estimate.estimate_job_s(sweep_jobs.expand(common + ["autoencoder=vae", "stage=stage1"])[0], {}, r) == 15
    assert estimate.estimate_job_s(sweep_jobs.expand(common + ["autoencoder=identity"])[0], {}, r) == 5 + 200 + 10
    # gan_inversion_matched runs its encoder's batches after the GAN's: its YAML's encoder_steps (= stage1.max_steps)
    matched = sweep_jobs.expand(common + ["autoencoder=gan_inversion_matched"])[0]
    assert estimate.estimate_job_s(matched, {}, r) == 5 + 20 + 10 + 1
    job = sweep_jobs.expand(common + ["autoencoder=gan_inversion_matched", "autoencoder.encoder_steps=50"])[0]
    assert estimate.estimate_job_s(job, {}, r) == 5 + 15 + 10 + 1
    inversion = sweep_jobs.expand(common + ["autoencoder=gan_inversion"])[0]
    assert estimate.estimate_job_s(inversion, {}, r) == 5 + 10 + 10 + 1
    jobs = {"a": common + ["autoencoder=vae,gan", "seed=0,1,2"]}
    assert len(sweep_jobs.expand(jobs["a"])) == 6
    est = estimate.estimate_profile_s(jobs, 2, r)
    assert est["a"] == 3 * 26 + 3 * 15 and est["wall"] == est["a"] / 2 and est["gpu_hours"] > 0
    assert estimate.measured_rates(Path("/nonexistent.json")) == estimate.RATES  # no bench run: the fallback rates


def test_gpu_estimate_counts_steps_at_the_modelled_step_time():
    r = {**estimate.RATES, "gpu_step_s": 0.01, "fixed_s": 5.0, "gen_sec_per_sample": 0.0}
    job = sweep_jobs.expand(["stage1.max_steps=100", "stage2.max_steps=200", "autoencoder=vae"])[0]
    assert estimate.estimate_job_s(job, {}, r, gpu=True) == pytest.approx(5.0 + 300 * 0.01)


@pytest.mark.slow  # 18 debug-sized train.py jobs, 2 at a time (~5 min): the slow tier
def test_quick_profile_runs_end_to_end_at_debug_budgets(tmp_path):
    """`evaluate.py claims=quick claims.run=true` with debug=fast budgets and 2 seeds: every sweep runs to
    completion, REPORT.md and verdicts.json are written, every claim gets a verdict from its criterion (C6,
    whose experiment belongs to the hybrid profile, stays undecided and says so), and a second call runs nothing
    (the sweeps are complete) and rewrites the same report."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "evaluate.py", "claims=quick", "claims.run=true", f"claims.dir={tmp_path}",
           "claims.seeds='0,1'", "claims.n_jobs=2", "claims.common=['debug=fast','logger=none']",
           "claims.budget.stage1=4", "claims.budget.stage2=4", "claims.budget.gan=8"]
    first = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=1500)
    assert first.returncode == 0, first.stderr[-3000:]
    for name, jobs in {"rows": 8, "beta": 4, "bigan_untrained": 2, "stacked": 2, "stacked_gan": 2}.items():
        assert runner.sweep_complete(tmp_path / name, jobs), name
    verdicts = json.loads((tmp_path / "verdicts.json").read_text())
    assert set(verdicts) == {"C0", "C1", "C2", "C3", "C4", "C5", "C6"}
    controls = json.loads((tmp_path / "controls.json").read_text())
    assert set(controls) == set(yaml.safe_load((root / "conf/claims/quick.yaml").read_text())["controls"])
    assert (tmp_path / "C0_ranking.png").is_file() and len(verdicts["C0"]["numbers"]["ranking"]) == 6
    assert all(v["verdict"] in criteria.VERDICTS for v in verdicts.values())
    assert all(v["verdict"] != "undecided" for k, v in verdicts.items() if k != "C6")  # every job ran and reported
    assert verdicts["C6"]["verdict"] == "undecided" and "hybrid" in json.dumps(verdicts["C6"])
    report = (tmp_path / "REPORT.md").read_text()
    again = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "running" not in again.stderr.split("experiment rows")[-1][:200]
    assert (tmp_path / "REPORT.md").read_text() == report


def test_compare_reads_b_from_another_experiment(tmp_path):
    """A GAN runs stage 1 only (no encoder) in its own sweep: `b_experiment` pairs it with the rows by seed."""
    make_sweep(tmp_path, "rows", {"vae": [1.0, 1.1, 0.9]})
    make_sweep(tmp_path, "gan_only", {"gan": [5.0, 5.2, 4.8]})
    f = criteria.decide({**cmp(), "b_experiment": "gan_only"}, criteria.Sweeps(tmp_path))
    assert f.verdict == "supported" and f.numbers["difference"]["test"] == "paired t"
    assert criteria.decide(cmp(), criteria.Sweeps(tmp_path)).verdict == "undecided"  # b is not in `rows`


@pytest.mark.slow  # a wandb run, offline (~10 s): the slow tier
def test_report_builds_each_experiments_table_and_logs_to_wandb_offline(tmp_path, monkeypatch):
    """claims_report on hand-made sweeps: each experiment gets its table (with the metrics the claims read) and
    figures, REPORT.md links them; with claims.wandb=true the report is one offline wandb run holding the
    verdicts and the tables as wandb.Table and the figures as images."""
    pytest.importorskip("wandb")
    from omegaconf import OmegaConf

    from ldm.analysis.claims.runner import claims_report

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    make_sweep(tmp_path, "rows", {"vae": [1.0, 1.1, 0.9], "gan": [5.0, 5.2, 4.8]})
    profile = {"profile": "t", "dir": str(tmp_path), "experiments": {"rows": ["autoencoder=vae,gan"]},
               "seeds": "0,1,2", "claims": {"C1": {"statement": "vae beats gan", "criterion": cmp()}},
               "wandb": True, "wandb_project": "ldm-test"}
    out = claims_report(OmegaConf.create({"claims": profile}))
    assert out == {"claims/C1": "supported"}
    table = (tmp_path / "rows" / "table.md").read_text()
    assert "gen/fid" in table and (tmp_path / "rows" / "table_bars.png").is_file()
    report = (tmp_path / "REPORT.md").read_text()
    assert "Tables: [rows](rows/table.md)" in report and "(rows/table_bars.png)" in report
    assert "What it reads:" in report and (tmp_path / "C1_metrics.png").is_file()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_readme_summary_is_spliced_from_reports(tmp_path, capsys):
    """`python -m ldm.analysis.claims readme README.md <dirs>`: per claim the first report that decides it, the numbers
    behind it, a link to its report; the same reports give the same bytes; no markers -> one error line, exit 2."""
    from omegaconf import OmegaConf

    from ldm.analysis.claims.runner import claims_report

    quick, hybrid = tmp_path / "quick", tmp_path / "hybrid"
    make_sweep(quick, "rows", {"vae": [1.0, 1.1, 0.9], "gan": [5.0, 5.2, 4.8]})
    make_sweep(hybrid, "hyb", {"vae": [1.0, 1.1, 0.9], "gan": [5.0, 5.2, 4.8]})
    c2_missing = {**cmp(), "experiment": "hyb"}
    claims_report(OmegaConf.create({"claims": {"profile": "quick", "dir": str(quick), "claims": {
        "C1": {"statement": "vae beats gan", "criterion": cmp()},
        "C2": {"statement": "hybrid", "criterion": c2_missing}}}}))
    claims_report(OmegaConf.create({"claims": {"profile": "hybrid", "dir": str(hybrid), "claims": {
        "C2": {"statement": "hybrid", "criterion": {**c2_missing, "sign": 1}}}}}))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- claims-summary:begin -->\nold\n<!-- claims-summary:end -->\nrest\n")
    assert publish.main(["readme", str(readme), str(quick), str(hybrid)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("\nrest\n") and "old" not in text
    assert "| C1 | vae beats gan | **supported** | [quick]" in text  # decided by the quick report
    assert "| C2 | hybrid | **contradicted** | [hybrid]" in text  # undecided in quick, decided by hybrid
    assert publish.main(["readme", str(readme), str(quick), str(hybrid)]) == 0 and readme.read_text() == text
    assert "The question first" not in text  # no report ranks rows
    # a later profile first, an earlier one beside it: the ranking of the first report that ranks, verdicts marked
    # where they changed from the earlier report (C2: undecided there, contradicted by hybrid)
    later = tmp_path / "later"
    make_sweep(later, "rows", {"vae": [1.0, 1.1, 0.95], "ae": [1.05, 1.12, 1.0], "bigan": [3.0, 3.3, 2.9]})
    claims_report(OmegaConf.create({"claims": {"profile": "later", "dir": str(later), "claims": {
        "C0": {"statement": "vae ranks", "criterion": rank_crit()},
        "C1": {"statement": "vae beats gan", "criterion": {**cmp(), "b": {"autoencoder": "bigan"}}}}}}))
    assert publish.main(["readme", str(readme), str(later), str(hybrid), "--earlier", str(quick), str(hybrid)]) == 0
    text = readme.read_text()
    assert f"--earlier {quick} {hybrid} -->" in text  # the command that made the block, whole
    assert "**The question first: gen/fid of the same latent diffusion on every row's latent** ([later" in text
    assert "| 1 | vae | 1.02 [" in text and "| 3 | bigan | 3.07 [" in text
    assert "| claim | statement | verdict | profile | before (quick, hybrid) |" in text
    assert f"| C0 | vae ranks | **supported** | [later]({later.as_posix()}/REPORT.md) | – |" in text  # no C0 before
    assert f"| C1 | vae beats gan | **supported** | [later]({later.as_posix()}/REPORT.md) | supported (quick) |" in text
    # C2: decided by hybrid now and before (quick left it undecided): the same verdict, not a change
    assert f"| C2 | hybrid | **contradicted** | [hybrid]({hybrid.as_posix()}/REPORT.md) | contradicted (hybrid) |" \
        in text
    assert publish.main(["readme", str(readme), str(hybrid), "--earlier", str(quick)]) == 0
    assert "| C2 | hybrid | **contradicted** | " in readme.read_text() and \
        "| undecided (quick; **changed**) |" in readme.read_text()
    assert publish.main(["readme", str(readme), str(later), "--earlier"]) == 2  # --earlier needs a report
    bare = tmp_path / "BARE.md"
    bare.write_text("no markers\n")
    assert publish.main(["readme", str(bare), str(quick)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "markers" in err[-1] and bare.read_text() == "no markers\n"
    assert publish.main(["readme", str(readme), str(tmp_path / "nope")]) == 2


def test_publish_copies_the_report_tables_and_figures_not_the_jobs(tmp_path):
    src, dst = tmp_path / "logs", tmp_path / "docs"
    make_sweep(src, "rows", {"vae": [1.0, 1.1, 0.9], "gan": [5.0, 5.2, 4.8]})
    (src / "REPORT.md").write_text("# r\\n[rows](rows/table.md)\\n")
    (src / "verdicts.json").write_text("{}")
    (src / "rows" / "table.md").write_text("| t |\\n")
    (src / "rows" / "table_bars.png").write_bytes(b"png")
    assert publish.main(["publish", str(src), str(dst)]) == 0
    got = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file())
    assert got == ["REPORT.md", "rows/table.md", "rows/table_bars.png", "verdicts.json"]
    assert publish.main(["publish", str(tmp_path / "nope"), str(dst)]) == 2


def test_experiments_and_metrics_a_criterion_reads():
    crit = {"kind": "all", "of": [cmp(), {**cmp(), "b_experiment": "gan_only", "b_metric": "latent/prior_fid"},
                                  {"kind": "trend", "experiment": "beta", "x": "k", "metric": "recon/mse"}]}
    assert criteria.experiments_of(crit) == ["rows", "gan_only", "beta"]
    assert criteria.metrics_of(crit, "rows") == ["gen/fid"]  # once, though two criteria read it
    assert criteria.metrics_of(crit, "gan_only") == ["latent/prior_fid"]
    assert criteria.metrics_of(crit, "beta") == ["recon/mse"]


def test_missing_experiments_run_side_by_side_largest_first():
    """Several missing experiments run one per CPU at one job each, largest first, and each CPU takes the next one
    when its own ends (a Barrier only passes if the first two really run at the same time); a lone experiment
    gets every CPU; each experiment's exit status comes back."""
    import threading

    started, barrier = [], threading.Barrier(2, timeout=10)

    def launch(name, side_by_side):
        started.append((name, side_by_side))
        if name in ("big", "mid"):
            barrier.wait()  # raises BrokenBarrierError unless the other lane is running too
        return 3 if name == "small" else 0

    todo = ["small", "big", "mid", "tiny"]
    codes = runner.run_experiments(todo, 2, launch, {"big": 100.0, "mid": 50.0, "small": 10.0, "tiny": 1.0})
    assert codes == {"big": 0, "mid": 0, "small": 3, "tiny": 0}
    assert sorted(started[:2]) == [("big", 1), ("mid", 1)] and set(started[2:]) == {("small", 1), ("tiny", 1)}
    started.clear()
    assert runner.run_experiments(["only"], 2, launch) == {"only": 0} and started == [("only", 2)]
    started.clear()
    runner.run_experiments(["a", "b"], 1, lambda n, k: started.append((n, k)) or 0)
    assert started == [("a", 1), ("b", 1)]  # one CPU (or a cluster launcher): one after the other, profile order


# --- version 2 of the criteria: Holm, power, the rank kind, negative controls ---------------------------------------

def make_jobs(root: Path, experiment: str, jobs: list[tuple[dict, dict]]) -> None:
    """Jobs with several metrics each: [(overrides incl. seed, metrics)], appended to the experiment's sweep."""
    d = root / experiment
    n = len([p for p in d.iterdir() if p.is_dir()]) if d.is_dir() else 0
    for i, (ov, m) in enumerate(jobs):
        job = d / str(n + i)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"{k}={v}" for k, v in ov.items()]))
        (job / "metrics.json").write_text(json.dumps({"status": "ok", **m}))


def leaf(p_support, p_contra=0.9, effect=None, se=1.0, df=2):
    t = {"estimate": 0.0, "se": se, "df": df, "threshold": 0.0, "contra": 0.0, "p_support": p_support,
         "p_contra": p_contra, "effect": effect, "zero_spread": p_support is None}
    return criteria.Finding("inconclusive", "leaf", {"test": t})


def test_holm_over_a_claims_sub_tests_changes_what_a_lone_interval_says():
    """Three sub-tests at one-sided p = 0.001, 0.02, 0.02: each alone clears 0.025, so without a correction the
    claim would be supported; Holm's steps (0.025/3, 0.025/2, 0.025) reject only the first, so it is not. At
    p = 0.001, 0.005, 0.02 every step passes and the claim is supported."""
    f = criteria.adjust(criteria.Finding("inconclusive", "all", parts=[leaf(0.001), leaf(0.02), leaf(0.02)]))
    assert [p.verdict for p in f.parts] == ["supported", "inconclusive", "inconclusive"] and f.verdict == "inconclusive"
    assert f.parts[0].numbers["test"]["holm_m"] == 3 and f.parts[0].numbers["test"]["level"] == pytest.approx(0.025 / 3)
    g = criteria.adjust(criteria.Finding("inconclusive", "all", parts=[leaf(0.001), leaf(0.005), leaf(0.02)]))
    assert g.verdict == "supported"
    # one contradiction that survives Holm contradicts the claim; a zero-spread leaf (no p) is never rejected
    h = criteria.adjust(criteria.Finding("inconclusive", "all", parts=[leaf(0.5, 0.001), leaf(None, None)]))
    assert h.verdict == "contradicted" and h.parts[1].verdict == "inconclusive"


def test_underpowered_when_the_detectable_effect_exceeds_the_declared_one():
    """se 1, df 2 at level 0.025: the MDE is ~6.2 (exact noncentral t); a declared effect of 1 is below it
    (underpowered), of 10 above it (a plain inconclusive: the run could have told)."""
    from ldm.analysis import statistics

    mde = statistics.detectable_effect(1.0, 2, 0.025)
    assert 5.0 < mde < 8.0
    assert criteria.adjust(leaf(0.3, effect=1.0)).verdict == "underpowered"
    assert criteria.adjust(leaf(0.3, effect=10.0)).verdict == "inconclusive"
    assert criteria.adjust(leaf(0.3)).verdict == "inconclusive"  # no declared effect: no power statement
    assert "MDE" in criteria.adjust(leaf(0.3, effect=1.0)).text


def rank_crit(**kw):
    rows = [{"experiment": "rows", "row": {"autoencoder": a}, "label": a} for a in ("vae", "ae", "bigan")]
    return {"kind": "rank", "metric": "gen/fid", "sign": -1, "margin": 0.25, "relative": True, "effect": 0.25,
            "claim": "vae", "rows": rows, **kw}


def test_rank_is_non_inferiority_to_every_row_and_ranks_them(tmp_path):
    """C0's kind: the claim row within 25 % of every other row -> supported; beyond 25 % of one -> contradicted;
    the ranking lists every row best first with its interval, and an unknown claim label is a config error."""
    make_sweep(tmp_path / "good", "rows", {"vae": [1.0, 1.1, 0.95], "ae": [1.05, 1.12, 1.0],
                                           "bigan": [3.0, 3.3, 2.9]})
    make_sweep(tmp_path / "bad", "rows", {"vae": [2.0, 2.1, 1.95], "ae": [1.0, 1.05, 0.97],
                                          "bigan": [3.0, 3.3, 2.9]})
    good = criteria.decide_claim(rank_crit(), criteria.Sweeps(tmp_path / "good"))
    assert good.verdict == "supported" and [p.verdict for p in good.parts] == ["supported", "supported"]
    rk = good.numbers["ranking"]
    assert [r["label"] for r in rk] == ["vae", "ae", "bigan"]
    assert rk[0]["non_inferior_to_best"] and not rk[2]["non_inferior_to_best"]
    assert rk[0]["first_job"] == "rows/0"  # vae, seed 0: the job whose samples the figure shows
    bad = criteria.decide_claim(rank_crit(), criteria.Sweeps(tmp_path / "bad"))
    assert bad.verdict == "contradicted" and bad.parts[0].verdict == "contradicted"  # vs ae: twice its FID
    assert [r["label"] for r in bad.numbers["ranking"]][0] == "ae"
    with pytest.raises(ConfigError, match="claim='nope'"):
        criteria.decide(rank_crit(claim="nope"), criteria.Sweeps(tmp_path / "good"))
    table = render.ranking_table(good)
    assert table[2].startswith("| 1 | vae | 1.02 [") and table[2].endswith("| 3 | (best) |")
    # ae - vae by seed: 0.05, 0.02, 0.05 -> +0.04, half-width t(0.975, 2) x 0.01 = 0.043
    assert table[3].startswith("| 2 | ae | 1.06 [")
    assert "| 3 | yes (vs the best: +0.04 [-0.00303, +0.083]) |" in table[3]
    assert table[4].startswith("| 3 | bigan | 3.07 [") and "| 3 | not shown (vs the best: +2.05 [" in table[4]
    png = figures.ranking_figure(good, tmp_path / "good", tmp_path / "C0_ranking.png")
    assert png.is_file() and png.stat().st_size > 1000


def profile_yaml(name: str) -> dict:
    root = Path(__file__).resolve().parents[1]
    p = yaml.safe_load((root / "conf" / "claims" / f"{name}.yaml").read_text())
    if name == "full":  # full extends quick: the quick profile's claims, with full's replacing them by name
        base = yaml.safe_load((root / "conf" / "claims" / "quick.yaml").read_text())
        p = {**base, **p, "claims": {k: {**base["claims"].get(k, {}), **v} for k, v in
                                     {**base["claims"], **p["claims"]}.items()}}
    return p


def _leaf_world(c: dict, true: bool, root: Path, n: int = 3) -> None:
    """Sweeps where one leaf criterion's claim is true by a wide margin, or false: exactly at its decision
    threshold, where no honest test may say `supported`. `n` seeds, spread in the paired differences."""
    noise_a, noise_b = [0.02, -0.03, 0.01, 0.015, -0.012][:n], [0.0, 0.01, -0.01, -0.004, 0.006][:n]
    seeds = [{"seed": s} for s in range(n)]
    kind, sign = c["kind"], int(c.get("sign", 1))
    if kind == "threshold":
        base = float(c["value"])
        shift = sign * (10 * 0.03 + abs(base)) if true else 0.0
        make_jobs(root, c["experiment"], [({**c["row"], **s}, {c["metric"]: base + shift + n})
                                          for s, n in zip(seeds, noise_a)])
        return
    if kind == "compare":
        b_base, relative = 1.0, bool(c.get("relative"))
        bound = float(c.get("margin", 0.0)) * (b_base if relative else 1.0)
        a_base = b_base + sign * bound + (sign * (0.5 + abs(bound)) if true else 0.0)
        ma, mb = c.get("a_metric", c.get("metric")), c.get("b_metric", c.get("metric"))
        make_jobs(root, c["experiment"], [({**c["a"], **s}, {ma: a_base + n}) for s, n in zip(seeds, noise_a)])
        make_jobs(root, c.get("b_experiment", c["experiment"]),
                  [({**c["b"], **s}, {mb: b_base + n}) for s, n in zip(seeds, noise_b)])
        return
    if kind == "rank":
        margin = float(c["margin"])
        for i, r in enumerate(c["rows"]):
            claim_row = r["label"] == c["claim"]
            v = 1.0 if true or not claim_row else 1.0 * (1 + margin) if c.get("relative") else 1.0 + margin
            v = v if sign < 0 else 2.0 - v + 1.0  # larger-is-better metrics: the claim row below the others
            make_jobs(root, r["experiment"], [({**r["row"], **s}, {c["metric"]: v + n * (1 + i % 2)})
                                              for s, n in zip(seeds, noise_a if claim_row else noise_b)])
        return
    raise AssertionError(f"no world for kind {kind}")


def _leaves_of(c: dict) -> list[dict]:
    return [x for p in c["of"] for x in _leaves_of(p)] if c["kind"] == "all" else [c]


@pytest.mark.parametrize("profile", ["quick", "full", "hybrid", "decisive"])
def test_every_criterion_can_fail_and_can_pass(tmp_path, profile):
    """Each leaf of every claim and control of the profile: in a world where its claim holds exactly at the
    decision threshold (false), it is never `supported`; in a world where it holds by a wide margin, it is. So no
    criterion passes by construction, and none is impossible to pass."""
    cfg = profile_yaml(profile)
    crits = [(f"{n}", c["criterion"]) for n, c in cfg["claims"].items()]
    crits += [(f"control {n}", c["criterion"]) for n, c in (cfg.get("controls") or {}).items()]
    checked = 0
    for name, crit in crits:
        for i, c in enumerate(_leaves_of(crit)):
            if c.get("experiment") == "hybrid" and profile in ("quick", "decisive"):
                continue  # C6 in the quick profile names the hybrid profile's experiment; decided there
            for true in (False, True):
                root = tmp_path / f"{name}-{i}-{true}".replace(" ", "_")
                _leaf_world(c, true, root, n=len(str(cfg["seeds"]).split(",")))
                got = criteria.decide_claim(c, criteria.Sweeps(root)).verdict
                assert (got == "supported") == true, (name, i, true, got)
                checked += 1
    assert checked >= 6  # hybrid: 3 leaves; quick: 20 with its controls


def test_an_untrained_encoder_fails_c4_and_passed_version_1(tmp_path):
    """The audit's numbers: an untrained BiGAN encoder's probe reads 0.878 / 0.917 / 0.928 of test digits, a random
    projection of the pixels 0.972 / 0.961 / 0.967. Version 1's C4 leaf (probe_1nn > 0.5) supports it; version 2's
    (the gain over the random projection > 0) and its control do not."""
    probe, rp = [0.878, 0.917, 0.928], [0.972, 0.961, 0.967]
    make_jobs(tmp_path, "bigan_untrained", [({"autoencoder": "bigan", "seed": s},
                                             {"latent/probe_1nn": p, "latent/probe_1nn_gain": p - r})
                                            for s, (p, r) in enumerate(zip(probe, rp))])
    v1 = {"kind": "threshold", "experiment": "bigan_untrained", "row": {"autoencoder": "bigan"},
          "metric": "latent/probe_1nn", "value": 0.5, "sign": 1}
    assert criteria.decide_claim(v1, criteria.Sweeps(tmp_path)).verdict == "supported"  # v1 could not fail
    cfg = profile_yaml("quick")
    ctl = criteria.controls(cfg, tmp_path)
    f = ctl["C4_untrained_gain"]
    assert f.verdict != "supported" and criteria.control_outcome(f) == "fails, as it must"
    assert f.numbers["test"]["estimate"] == pytest.approx(sum(p - r for p, r in zip(probe, rp)) / 3)
    assert criteria.control_outcome(criteria.Finding("supported", "")) == "PASSES: the criterion decides nothing"
    assert ctl["C3_ae_gaussian"].verdict == "undecided"  # no rows sweep here: named, not guessed
    with pytest.raises(ConfigError, match="controls.x.claim"):
        criteria.controls({"claims": {"C1": {}}, "controls": {"x": {"claim": "C9", "criterion": v1}}}, tmp_path)
    with pytest.raises(ConfigError, match="does not run"):
        criteria.controls({"claims": {"C1": {}}, "experiments": {"rows": []},
                           "controls": {"x": {"claim": "C1", "criterion": v1}}}, tmp_path)


def test_rows_match_override_values_by_number():
    """Hydra's sweeper writes `autoencoder.kl_weight=1e-2` into overrides.yaml as 0.01: a criterion naming "1e-2"
    must find those jobs, and must not confuse 1e-2 with 1e-3 or a string with a number."""
    rec = {"overrides": {"autoencoder.kl_weight": "0.01", "autoencoder": "vae"}}
    assert criteria._match(rec, {"autoencoder.kl_weight": "1e-2", "autoencoder": "vae"})
    assert not criteria._match(rec, {"autoencoder.kl_weight": "1e-3"})
    assert not criteria._match(rec, {"autoencoder": "vae_gan"})


def test_zero_spread_is_no_test_not_p_zero(tmp_path):
    """Every seed equal on both sides: no interval can be computed honestly; the leaf says so and stays
    inconclusive (version 1 returned p = 0 and a zero-width interval, i.e. `supported`)."""
    make_sweep(tmp_path, "rows", {"vae": [1.0, 1.0, 1.0], "gan": [5.0, 5.0, 5.0]})
    f = criteria.decide_claim(cmp(), criteria.Sweeps(tmp_path))
    assert f.verdict == "inconclusive" and "zero spread" in f.text and f.numbers["test"]["p_support"] is None


def _png(path: Path, shade: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (shade, shade, shade)).save(path)


def test_sample_figures_show_every_row_at_one_shared_seed_beside_real_data(tmp_path):
    """Each row a claim reads at the lowest seed they all have a grid for (vae has one at 1 and 2, the GAN only its
    prior samples at 1 and 2: seed 1, not vae's own lowest 0's missing grid); a row without any grid is shown as
    such; the real-data grid is drawn once per distinct dataset config, across claims; no grid at all: no figure."""
    for seed in (0, 1, 2):
        make_jobs(tmp_path, "rows", [({"autoencoder": "vae", "seed": seed}, {"gen/fid": 1.0 + seed})])
    for seed in (1, 2):
        make_jobs(tmp_path, "rows", [({"autoencoder": "gan", "seed": seed}, {"gen/fid": 5.0})])
    make_jobs(tmp_path, "ctrl", [({"autoencoder": "bigan", "seed": 0}, {"latent/probe": 0.1})])
    for job in tmp_path.glob("*/*"):
        ov = dict(o.split("=") for o in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()))
        data = {"_target_": "ldm.data.digits.DigitsDataModule" if job.parent.name == "rows" else
                "ldm.data.stacked_digits.StackedDigitsDataModule", "split_seed": 0, "shuffle_seed": int(ov["seed"])}
        (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"data": data}))
        if ov["autoencoder"] == "vae" and ov["seed"] != "0":
            _png(job / "samples.png", 100)
        if ov["autoencoder"] == "gan":
            _png(job / "stage1_prior.png", 200)
    crit = {"kind": "all", "of": [cmp(), {"kind": "threshold", "experiment": "ctrl", "row": {"autoencoder": "bigan"},
                                          "metric": "latent/probe", "value": 0.0, "sign": 1}]}
    sweeps = criteria.Sweeps(tmp_path)
    panels, seed = figures.sample_panels(crit, sweeps)
    assert str(seed) == "1"
    shown = {(p["experiment"], p["label"]): p for p in panels}
    assert shown[("rows", "autoencoder=vae")]["grid"][seed].name == "samples.png"
    assert shown[("rows", "autoencoder=gan")]["grid"][shown[("rows", "autoencoder=gan")]["seed"]].name \
        == "stage1_prior.png"
    assert shown[("ctrl", "autoencoder=bigan")]["grids"] == set()
    twice = {"kind": "all", "of": [cmp(), {**cmp(), "a_label": "the vae", "sign": 1}]}  # vae under two labels
    assert [p["label"] for p in figures.sample_panels(twice, sweeps)[0]] == ["autoencoder=vae", "autoencoder=gan"]
    calls = []

    def real(cfg: Path, png: Path) -> Path:
        calls.append(yaml.safe_load(cfg.read_text())["data"]["_target_"])
        _png(png, 255)
        return png

    drawn: dict = {}
    assert figures.samples_figure("C1", crit, sweeps, real, tmp_path / "C1_samples.png", drawn).is_file()
    assert sorted(calls) == ["ldm.data.digits.DigitsDataModule", "ldm.data.stacked_digits.StackedDigitsDataModule"]
    figures.samples_figure("C2", cmp(), sweeps, real, tmp_path / "C2_samples.png", drawn)
    assert len(calls) == 2  # the digits grid drawn for C1 serves C2 (another seed's config, the same data)
    none = {"kind": "threshold", "experiment": "ctrl", "row": {"autoencoder": "bigan"}, "metric": "latent/probe",
            "value": 0.0, "sign": 1}
    assert figures.samples_figure("C3", none, sweeps, real, tmp_path / "C3_samples.png") is None
    assert not (tmp_path / "C3_samples.png").exists()
