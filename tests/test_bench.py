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
