"""The table builder on hand-made sweep directories with known numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from ldm.analysis import budget, columns, render, tables
from ldm.errors import ConfigError


def make_job(root: Path, num: int, overrides: list[str], metrics: dict | None) -> None:
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
        {"stage1": {"max_steps": 1000}, "stage2": {"max_steps": 2000, "batch_size": 128}, "data": {"batch_size": 64},
         "metrics": {"num_samples": None}}))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def sweep(tmp_path):
    rows = {"vae": [(30.0, 10.0), (32.0, 14.0), (34.0, 12.0)], "bigan": [(13.0, 400.0), (15.0, 500.0)]}
    n = 0
    for ae, values in rows.items():
        for seed, (psnr, fid) in enumerate(values):
            make_job(tmp_path, n, ["experiment=autoencoders", f"autoencoder={ae}", f"seed={seed}"],
                     {"status": "ok", "recon/psnr": psnr, "gen/fid": fid, "eval/fid_floor": 5.0,
                      "eval/fid_floor_n": 180})
            n += 1
    make_job(tmp_path, n, ["experiment=autoencoders", "autoencoder=bigan", "seed=2"],
             {"status": "failed", "error": "RuntimeError: boom"})
    make_job(tmp_path, n + 1, ["experiment=autoencoders", "autoencoder=gan", "seed=0"], None)  # never finished
    return tmp_path


def test_known_means_intervals_and_best(sweep):
    t = tables.build(sweep, columns=["recon/psnr", "gen/fid"])
    assert t["swept"] == ["autoencoder"]
    rows = {r["group"]: r for r in t["rows"]}
    vae, bigan = rows[(("autoencoder", "vae"),)], rows[(("autoencoder", "bigan"),)]
    # 30, 32, 34: mean 32, std 2, t(0.975, 2) = 4.3027 -> half-width 4.3027 * 2 / sqrt(3) = 4.968
    assert vae["n"] == 3 and vae["cells"]["recon/psnr"] == "32.00 [27.03, 36.97] (3)"
    assert vae["cells"]["gen/fid"] == "12.00 [7.03, 16.97] (3)"
    # 13, 15: std sqrt(2), t(0.975, 1) = 12.706 -> half-width 12.706
    assert bigan["n"] == 2 and bigan["cells"]["recon/psnr"] == "14.00 [1.29, 26.71] (2)"
    assert bigan["cells"]["gen/fid"] == "450.0 [-185.3, 1085.3] (2)"
    order = [r["group"] for r in t["rows"]]
    assert t["reference"] == order.index((("autoencoder", "vae"),))  # the default reference row
    assert t["best"]["recon/psnr"] == {order.index((("autoencoder", "vae"),))}  # higher PSNR, Welch p = 0.0016
    # lower FID is better and vae's mean is lower, but bigan's 2 seeds spread so much (Welch df ~ 1) that the
    # difference is not significant (p = 0.072): no bold
    assert "gen/fid" not in t["best"]
    d = bigan["vs_ref"]["recon/psnr"]
    assert d["test"] == "Welch t" and d["diff"] == -18.0 and d["p"] == pytest.approx(0.00158, abs=2e-5)
    assert bigan["vs_ref"]["gen/fid"]["p"] == pytest.approx(0.0722, abs=2e-4)
    md = (sweep / "table.md").read_text()
    assert "| FID floor (n=180) |" in md and "**32.00 [27.03, 36.97] (3)**" in md
    assert "| autoencoder=bigan | -18.00 [-22.98, -13.02] p=0.002 | +438.0 [-195.9, +1071.9] p=0.072 |" in md
    assert "stage-1 steps 1000" in md and "experiment=autoencoders" in md
    assert "job 5 (autoencoder=bigan, seed=2): failed: RuntimeError: boom" in md
    assert "job 6 (autoencoder=gan, seed=0): missing" in md
    csv = (sweep / "table.csv").read_text().splitlines()
    assert csv[0] == ("config,n,recon/psnr,recon/psnr_std,recon/psnr_lo,recon/psnr_hi,recon/psnr_vs_ref,"
                      "recon/psnr_vs_ref_p,gen/fid,gen/fid_std,gen/fid_lo,gen/fid_hi,gen/fid_vs_ref,gen/fid_vs_ref_p")
    assert csv[1].startswith("autoencoder=vae,3,32.0,2.0,27.03") and csv[2].startswith("autoencoder=bigan,2,14.0,")
    assert r"\textbf{32.00 [27.03, 36.97] (3)}" in (sweep / "table.tex").read_text()


def test_a_wide_table_reads_one_line_per_metric(sweep):
    """More than WIDE columns: the sweep's rows become the columns, metrics go down in reading order (reconstruction,
    latent, generation, then the stages), with the same cells, bold and differences as the narrow layout; a metric
    no row measured is named below instead of a line of dashes."""
    cols = ["gen/fid", "stage1/wall_s", "recon/psnr"] + [f"latent/x{i}" for i in range(6)] + ["gen/recall"]
    assert len(cols) > render.WIDE
    tables.build(sweep, columns=cols)
    md = (sweep / "table.md").read_text()
    assert "| metric | autoencoder=vae | autoencoder=bigan |" in md
    lines = [ln.split(" | ")[0].lstrip("| ") for ln in md.splitlines() if ln.startswith("| ") and " | " in ln]
    body = lines[1:lines.index("metric", 1)]  # the first table's metric column (the differences follow)
    assert body == ["recon/psnr", "gen/fid", "FID floor (n=180)"]  # reading order; unmeasured ones left out
    assert "| recon/psnr | **32.00 [27.03, 36.97] (3)** | 14.00 [1.29, 26.71] (2) |" in md
    assert "| recon/psnr | -18.00 [-22.98, -13.02] p=0.002 |" in md  # bigan − vae, as in the narrow table
    assert "Not measured by any row here: stage1/wall_s, latent/x0, " in md and "gen/recall." in md
    narrow = tables.build(sweep, columns=["recon/psnr", "gen/fid"])  # at most WIDE columns: one line per row
    assert "| config | recon/psnr | gen/fid | FID floor (n=180) |" in (sweep / "table.md").read_text()
    assert narrow["columns"] == ["recon/psnr", "gen/fid"]


def test_direction():
    assert columns.direction("recon/psnr") == 1 and columns.direction("gen/fid") == -1
    assert columns.direction("gen/classes_covered") == 1 and columns.direction("latent/cycle_error") == -1
    assert columns.direction("gen/modes_covered") == 1 and columns.direction("gen/mode_kl") == -1


def test_not_a_sweep(tmp_path):
    with pytest.raises(ConfigError, match="no job directories"):
        tables.build(tmp_path)
    with pytest.raises(ConfigError, match="not a directory"):
        tables.build(tmp_path / "nope")


def test_re_evaluated_jobs_take_eval_json(sweep):
    """evaluate.py run_dir=<job> writes eval.json (e.g. with a metric added later): the table uses it and says so;
    a failed job stays failed whatever lies beside it."""
    (sweep / "0" / "eval.json").write_text(json.dumps({"status": "ok", "gen/fid": 16.0, "recon/class_accuracy": 0.9}))
    (sweep / "5" / "eval.json").write_text(json.dumps({"status": "ok", "gen/fid": 1.0}))
    t = tables.build(sweep, columns=["gen/fid", "recon/class_accuracy"])
    vae = {r["group"]: r for r in t["rows"]}[(("autoencoder", "vae"),)]
    assert vae["cells"]["gen/fid"] == "14.00 [9.03, 18.97] (3)"  # 16, 14, 12
    assert vae["cells"]["recon/class_accuracy"] == "0.900 (1)" and vae["stds"]["recon/class_accuracy"] is None
    assert t["re_evaluated"] == 1 and any(b["job"] == "5" for b in t["bad"])
    md = (sweep / "table.md").read_text()
    assert "Re-evaluated from checkpoints (eval.json over metrics.json): 1 of 7 jobs." in md


def _rows(tmp_path, values: dict) -> dict:
    n = 0
    for ae, vals in values.items():
        for seed, v in enumerate(vals):
            make_job(tmp_path, n, [f"autoencoder={ae}", f"seed={seed}"], {"status": "ok", "gen/fid": v})
            n += 1
    t = tables.build(tmp_path, columns=["gen/fid"])
    return {dict(r["group"])["autoencoder"] for i, r in enumerate(t["rows"]) if i in t["best"].get("gen/fid", ())}


def test_best_only_where_earned(tmp_path):
    """Two rows drawn from one distribution get no bold; the better of two clearly separated rows gets it; ties,
    single seeds and a top row within noise of the runner-up get none."""
    g = torch.Generator().manual_seed(0)
    same = (10 + torch.randn(2, 5, generator=g)).tolist()
    assert _rows(tmp_path / "same", {"vae": same[0], "ae": same[1]}) == set()
    assert _rows(tmp_path / "apart", {"vae": [10.0, 10.5, 9.5, 10.2, 9.8], "ae": [20.0, 20.4, 19.5, 20.3, 19.8],
                                      "gan": [90.0, 95.0, 85.0, 92.0, 88.0]}) == {"vae"}
    assert _rows(tmp_path / "tie", {"vae": [10.0, 10.0], "ae": [10.0, 10.0], "gan": [50.0, 50.0]}) == set()
    assert _rows(tmp_path / "one_seed", {"vae": [10.0], "ae": [20.0]}) == set()
    # paired by seed: a small but consistent per-seed gain is significant where the unpaired spread is not
    assert _rows(tmp_path / "paired", {"vae": [10.0, 12.0, 14.0, 16.0], "ae": [10.3, 12.3, 14.4, 16.2]}) == {"vae"}


def test_reference_row_can_be_named(tmp_path):
    for n, (ae, v) in enumerate([("vae", 1.0), ("vae", 2.0), ("ae", 3.0), ("ae", 4.0)]):
        make_job(tmp_path, n, [f"autoencoder={ae}", f"seed={n % 2}"], {"status": "ok", "gen/fid": v})
    t = tables.build(tmp_path, columns=["gen/fid"], reference="autoencoder=ae")
    vae = next(r for r in t["rows"] if dict(r["group"])["autoencoder"] == "vae")
    assert vae["vs_ref"]["gen/fid"]["diff"] == -2.0 and vae["vs_ref"]["gen/fid"]["test"] == "paired t"
    with pytest.raises(ConfigError, match="matches 0 rows"):
        tables.build(tmp_path, columns=["gen/fid"], reference="autoencoder=gan")


def test_wall_times_of_cached_stages_and_identity_reconstruction_are_never_best(tmp_path):
    jobs = [  # row, recon/psnr, stage1/params, stage1/wall_s, stage1/source, gen/fid
        ("identity", 126.0, 0, 0.0, "none", 5.0),    # a sentinel PSNR (no reconstruction), no stage 1
        ("vae", 30.0, 10, 0.5, "cache", 4.0),        # a stage taken from the cache: its wall time is not its own
        ("ae", 29.0, 10, 90.0, "trained", 6.0),
        ("vae_gan", 25.0, 12, 120.0, "trained", 7.0),
    ]
    for n, (row, psnr, params, wall, source, fid) in enumerate(jobs):
        for seed in (0, 1, 2):  # three seeds, jitter 0.01-0.1: every gap between rows is far outside the noise
            e = 0.01 * ((seed * (n + 2)) % 7 + seed)  # row-dependent, so paired differences have a spread (a zero
            make_job(tmp_path, 3 * n + seed, [f"autoencoder={row}", f"seed={seed}"],  # spread has no test)
                     {"status": "ok", "recon/psnr": psnr + e, "stage1/params": params,
                      "stage1/wall_s": wall + e, "stage1/source": source, "gen/fid": fid + e})
    t = tables.build(tmp_path, columns=["recon/psnr", "stage1/wall_s", "gen/fid"])
    order = [dict(r["group"])["autoencoder"] for r in t["rows"]]
    best = {c: {order[i] for i in rows} for c, rows in t["best"].items()}
    assert best == {"recon/psnr": {"vae"}, "stage1/wall_s": {"ae"}, "gen/fid": {"vae"}}


def test_figures_next_to_the_table(tmp_path):
    """Bars with intervals for every table, and a rate-distortion curve when the sweep varies the KL weight."""
    n = 0
    for beta, (rate, mse) in {"0.0": (40.0, 0.01), "1e-4": (20.0, 0.02), "1.0": (2.0, 0.08)}.items():
        for seed in range(2):
            make_job(tmp_path, n, [f"autoencoder.kl_weight={beta}", f"seed={seed}"],
                     {"status": "ok", "latent/rate": rate + seed, "recon/mse": mse * (1 + 0.1 * seed),
                      "gen/fid": 1.0 + seed, "eval/fid_floor": 0.5, "eval/fid_floor_lo": 0.3,
                      "eval/fid_floor_hi": 0.9})
            n += 1
    t = tables.build(tmp_path, columns=["latent/rate", "recon/mse", "gen/fid"])
    assert [p.name for p in t["figures"]] == ["table_bars.png", "table_rate_distortion.png"]
    assert all(p.stat().st_size > 1000 for p in t["figures"])
    assert "0.500 (0.300–0.900)" in (tmp_path / "table.md").read_text()  # the floor as median (5-95 % range)


def test_budget_curves_find_each_rows_converged_budget(tmp_path):
    """A row that plateaus after 300 steps converges at 300 (1000 is within noise of it); a row still improving
    clearly at every rung converges at the largest budget; the figure and the converged table are written."""
    import random

    rng, n = random.Random(0), 0
    for ae, curve in (("vae", {100: 3.0, 300: 1.5, 1000: 1.5}), ("bigan", {100: 5.0, 300: 4.0, 1000: 2.0})):
        for b, m in curve.items():
            for seed in range(3):
                make_job(tmp_path, n, [f"autoencoder={ae}", f"stage1.max_steps={b}", f"seed={seed}"],
                         {"status": "ok", "recon/rfid": m + 0.05 * rng.random(), "stage1/wall_s": b / 4.0})
                n += 1
    t = tables.build(tmp_path, ["recon/rfid", "stage1/wall_s"])
    rows = {dict(g)["autoencoder"]: c for g, c in t["budget"]["rows"].items()}
    assert rows["vae"]["converged"] == 300 and rows["bigan"]["converged"] == 1000
    assert rows["vae"]["budgets"] == [100, 300, 1000] and rows["vae"]["wall_s"] == [25.0, 75.0, 250.0]
    assert (tmp_path / "table_budget.png").is_file()
    converged = (tmp_path / "table_converged.md").read_text()
    assert "| autoencoder=vae | 300 |" in converged and "| autoencoder=bigan | ≥ 1000 (no plateau shown) |" in converged
    assert budget.budget_curves({**t, "swept": ["autoencoder"]}, "recon/rfid") is None


def test_converged_budget_needs_equivalence_not_just_no_significant_difference(tmp_path):
    """Two noisy seeds of a row still improving (rFID 0.64 -> 0.22 -> 0.12, the AE's measured curve, with seed
    noise): no budget differs significantly from the best, yet none is shown within 10 % of it, so the
    row has no converged budget below the top of the ladder (the old rule said 100). A row whose 300 and 1000
    agree to within 1 % in both seeds converges at 300."""
    n = 0
    noise = {"ae": {100: 0.3, 300: 0.15, 1000: 0.02}, "vae": {100: 0.005, 300: 0.005, 1000: 0.005}}
    for ae, curve in (("ae", {100: 0.64, 300: 0.22, 1000: 0.12}), ("vae", {100: 3.0, 300: 1.01, 1000: 1.0})):
        for b, m in curve.items():
            for seed in range(2):
                make_job(tmp_path, n, [f"autoencoder={ae}", f"stage1.max_steps={b}", f"seed={seed}"],
                         {"status": "ok", "recon/rfid": m + (noise[ae][b] if seed else -noise[ae][b])})
                n += 1
    t = tables.build(tmp_path, ["recon/rfid"])
    rows = {dict(g)["autoencoder"]: c for g, c in t["budget"]["rows"].items()}
    best = rows["ae"]["stats"][-1]
    for s in rows["ae"]["stats"][:-1]:  # neither smaller budget is *significantly* worse ...
        assert s["lo"] <= best["hi"]
    assert rows["ae"]["converged"] == 1000 and rows["vae"]["converged"] == 300  # ... nor shown within 10 %
    assert "| autoencoder=ae | ≥ 1000 (no plateau shown) |" in (tmp_path / "table_converged.md").read_text()


def test_the_table_goes_to_wandb_grouped_with_the_sweeps_runs(sweep, monkeypatch):
    """evaluate.py table.dir=... table.wandb=true: the table as a wandb.Table with the CSV's cells, in a run grouped
    with the sweep's jobs (their task name) and named after the sweep; offline here."""
    pytest.importorskip("wandb")
    from ldm.utils.wandb_offline import summary

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = sweep / "0" / ".hydra" / "config.yaml"
    cfg.write_text(yaml.safe_dump({**yaml.safe_load(cfg.read_text()), "task_name": "autoencoders"}))
    tables.build(sweep, columns=["recon/psnr", "gen/fid"])
    tables.log_to_wandb(sweep, "table", "ldm")
    (run_file,) = sweep.glob("wandb/offline-run-*/run-*.wandb")
    s = summary(run_file)
    assert s["group"] == "autoencoders" and s["name"] == f"table-{sweep.name}"
    assert s["config"]["sweep"] == sweep.name
    (logged,) = run_file.parent.rglob("files/media/table/table/table_*.table.json")
    got = json.loads(logged.read_text())
    import csv

    with open(sweep / "table.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert got["columns"] == rows[0] and got["data"] == rows[1:] and len(rows) == 4  # vae, bigan, unfinished gan
    assert tables.build(sweep, columns=["recon/psnr"])["rows"]  # the wandb folder is not taken for a job
