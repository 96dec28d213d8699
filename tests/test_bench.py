"""`benchmarks/bench.py --quick` runs end to end and writes every section (speed itself is never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_bench_quick_writes_every_section(tmp_path):
    pytest.importorskip("diffusers", reason="the bench extra: pip install -e '.[bench]' (.ci/run installs it)")
    out = tmp_path / "RESULTS.md"
    proc = subprocess.run([sys.executable, "benchmarks/bench.py", "--quick", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for heading in ("## 1. Machine and load", "## 2. Conv peak", "## 3. UNet: ours vs diffusers",
                    "## 4. Stage steps/s", "## 5. Contention", "## 6. Planning"):
        assert heading in text, heading
    raw = json.loads((tmp_path / "results.json").read_text())  # the raw numbers beside the report
    assert raw["quick"] is True and set(raw["section_wall_s"]) >= {"machine", "conv", "unet", "jobs", "contention"}
    assert "1,080,738" in text  # ours and diffusers at an equal config: the same parameter count


def test_gpu_check_without_a_gpu_is_one_error_line(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: the check would run")
    from benchmarks import gpu_check

    assert gpu_check.main(["--out", str(tmp_path / "GPU.md")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: make gpu-check needs a CUDA GPU") and "TORCH_INDEX" in err[0]
    assert not (tmp_path / "GPU.md").exists()


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_on_the_cpu_at_toy_sizes(tmp_path):
    """`make gpu-check`'s script, as the CPU smoke run (`--cpu-smoke`): every section fills in, the 2-job sweep
    through hydra/launcher=gpus finishes, a deterministic resume is bit-identical and device noise reproduces, the
    throughput cells and the plan have numbers."""
    out = tmp_path / "GPU.md"
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--cpu-smoke", "--out", str(out), "--rows", "vae",
                           "--concurrency", "1,2", "--seconds", "1", "--batch", "8", "--plan-steps", "4",
                           "--budget-s", "900"], cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    r = json.loads((tmp_path / "gpu.json").read_text())
    assert set(r["rows"]) == {"rows", "ddgan", "bf16-mixed", "placement"}  # compile: not on a CPU smoke run
    assert all(s["ok"] for s in r["rows"].values()), r["rows"]
    assert [j["overrides"] for j in r["rows"]["rows"]["jobs"]] == ["autoencoder=vae"]
    assert len(r["rows"]["placement"]["jobs"]) == 2 and "skipped" in r["ddp"]
    cells = r["throughput"]["cells"]
    assert {(c["what"], c["k"]) for c in cells} == {(w, k) for w in ("train", "sample") for k in (1, 2)}
    assert all(c["steps_per_s"] > 0 and len(c["workers"]) == c["k"] for c in cells), cells
    assert r["plan"]["ok"] and r["plan"]["gpu_hours_one_per_gpu"] > 0 and r["plan"]["profile_jobs"] > 100
    text = out.read_text()
    assert r["repro"]["ok"] and r["repro"]["resume_identical"] and r["repro"]["device_noise_reproducible"]
    assert r["repro"]["device_equals_cpu_stream"]  # on a CPU the device generator is a CPU one
    for heading in ("## 1. Every row family", "## 2. Reproducibility", "## 3. DDP", "## 4. Jobs per GPU",
                    "## 5. The full profile"):
        assert heading in text, heading
    assert "CPU smoke run" in text
