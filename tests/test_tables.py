"""The table builder on hand-made sweep directories with known numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ldm import tables
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


def test_known_means_stds_and_best(sweep):
    t = tables.build(sweep, columns=["recon/psnr", "gen/fid"])
    assert t["swept"] == ["autoencoder"]
    rows = {r["group"]: r for r in t["rows"]}
    vae, bigan = rows[(("autoencoder", "vae"),)], rows[(("autoencoder", "bigan"),)]
    assert vae["n"] == 3 and vae["cells"]["recon/psnr"] == "32.00 ± 2.00 (3)"  # stdev of 30, 32, 34
    assert vae["cells"]["gen/fid"] == "12.00 ± 2.00 (3)"
    assert bigan["n"] == 2 and bigan["cells"]["recon/psnr"] == "14.00 ± 1.41 (2)"
    assert bigan["cells"]["gen/fid"] == "450.0 ± 70.7 (2)"
    order = [r["group"] for r in t["rows"]]
    assert t["best"]["recon/psnr"] == {order.index((("autoencoder", "vae"),))}  # higher PSNR is better
    assert t["best"]["gen/fid"] == {order.index((("autoencoder", "vae"),))}  # lower FID is better
    md = (sweep / "table.md").read_text()
    assert "| FID floor (n=180) |" in md and "**32.00 ± 2.00 (3)**" in md
    assert "stage-1 steps 1000" in md and "experiment=autoencoders" in md
    assert "job 5 (autoencoder=bigan, seed=2): failed: RuntimeError: boom" in md
    assert "job 6 (autoencoder=gan, seed=0): missing" in md
    csv = (sweep / "table.csv").read_text().splitlines()
    assert csv[0] == "config,n,recon/psnr,recon/psnr_std,gen/fid,gen/fid_std"
    assert "autoencoder=vae,3,32.0,2.0,12.0,2.0" in csv
    assert r"\textbf{32.00 $\pm$ 2.00 (3)}" in (sweep / "table.tex").read_text()


def test_direction():
    assert tables.direction("recon/psnr") == 1 and tables.direction("gen/fid") == -1
    assert tables.direction("gen/classes_covered") == 1 and tables.direction("latent/cycle_error") == -1


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
    assert vae["cells"]["gen/fid"] == "14.00 ± 2.00 (3)"  # 16, 14, 12
    assert vae["cells"]["recon/class_accuracy"] == "0.900 (1)" and vae["stds"]["recon/class_accuracy"] is None
    assert t["re_evaluated"] == 1 and any(b["job"] == "5" for b in t["bad"])
    md = (sweep / "table.md").read_text()
    assert "Re-evaluated from checkpoints (eval.json over metrics.json): 1 of 7 jobs." in md


def test_tied_best_marks_every_row(tmp_path):
    for n, (ae, classes) in enumerate([("vae", 10), ("ae", 10), ("bigan", 1)]):
        make_job(tmp_path, n, [f"autoencoder={ae}", "seed=0"], {"status": "ok", "gen/classes_covered": classes})
    t = tables.build(tmp_path, columns=["gen/classes_covered"])
    assert t["best"]["gen/classes_covered"] == {0, 1}
    assert (tmp_path / "table.md").read_text().count("**10.00 (1)**") == 2


def test_wall_times_of_cached_stages_and_identity_reconstruction_are_never_best(tmp_path):
    jobs = [  # row, recon/psnr, stage1/params, stage1/wall_s, stage1/source, gen/fid
        ("identity", 126.0, 0, 0.0, "none", 5.0),    # a sentinel PSNR (no reconstruction), no stage 1
        ("vae", 30.0, 10, 0.5, "cache", 4.0),        # a stage taken from the cache: its wall time is not its own
        ("ae", 29.0, 10, 90.0, "trained", 6.0),
        ("vae_gan", 25.0, 12, 120.0, "trained", 7.0),
    ]
    for n, (row, psnr, params, wall, source, fid) in enumerate(jobs):
        make_job(tmp_path, n, [f"autoencoder={row}", "seed=0"],
                 {"status": "ok", "recon/psnr": psnr, "stage1/params": params, "stage1/wall_s": wall,
                  "stage1/source": source, "gen/fid": fid})
    t = tables.build(tmp_path, columns=["recon/psnr", "stage1/wall_s", "gen/fid"])
    order = [dict(r["group"])["autoencoder"] for r in t["rows"]]
    best = {c: {order[i] for i in rows} for c, rows in t["best"].items()}
    assert best == {"recon/psnr": {"vae"}, "stage1/wall_s": {"ae"}, "gen/fid": {"vae"}}
