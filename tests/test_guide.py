"""docs/own-data.md runs as written: each `bash` block of the page, in order, in one shell (set -e), with $WORK in
a temporary folder; then the files each step promises are there."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from tests.conftest import ROOT

GUIDE = ROOT / "docs" / "own-data.md"


def blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", GUIDE.read_text(), flags=re.S)


def test_the_guide_has_its_steps():
    text = "\n".join(blocks())
    for step in ("data=folder", "data=hf", "evaluate.py run_dir=", "sample.py", "export=", "to_diffusers"):
        assert step in text, step


@pytest.mark.slow
def test_the_own_data_guide_runs_as_written(tmp_path):
    pytest.importorskip("diffusers")
    pytest.importorskip("datasets")
    work = tmp_path / "work"
    # the page sets WORK itself (export WORK=...): point it at this test's folder instead
    script = "set -euo pipefail\n" + "\n".join(b.replace("export WORK=/tmp/ldm-own-data", f"export WORK={work}")
                                               for b in blocks())
    proc = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=1500,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "LDM_GPU_SLOTS": str(tmp_path / "slots")})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "['one', 'seven', 'zero'] 539 images" in proc.stdout
    for run in ("run", "run_hf"):
        assert json.loads((work / run / "metrics.json").read_text())["status"] == "ok", run
    assert json.loads((work / "eval" / "eval.json").read_text())["status"] == "ok"
    assert len(list((work / "sevens").glob("0*.png"))) == 16 and (work / "sevens" / "grid.png").is_file()
    assert (work / "export" / "model.json").is_file()
    assert "['one', 'seven', 'zero'] (8, 1, 16, 16) True True" in proc.stdout
    assert "UNet2DModel DDIMScheduler (4, 1, 16, 16)" in proc.stdout
