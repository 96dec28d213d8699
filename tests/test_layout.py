"""The layout as code: the import contracts of pyproject.toml hold (and a broken one is caught), entries hold no
logic, no YAML default is restated in code, no row is known by name, long modules say why they are long."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd)}  # the `ldm` found first is the one under cwd
    return subprocess.run(
        [str(LINT), str(cwd / "pyproject.toml")], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_import_contracts_hold():
    out = lint(ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "module, line, contract",
    [
        ("nets/blocks.py", "from ldm.run import train", "science packages know nothing of runs"),
        ("analysis/columns.py", "import ldm.autoencoders.vae", "analysis never imports a model class"),
        ("run/sample.py", "from ldm.analysis import tables", "one job and many jobs meet only"),
        ("nets/blocks.py", "import lightning", "networks are plain nn.Modules"),
    ],
)
def test_a_broken_rule_is_caught(tmp_path, module, line, contract):
    """Negative control: the same tree with one forbidden import added fails, naming the contract it breaks."""
    shutil.copytree(ROOT / "ldm", tmp_path / "ldm", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "ldm" / module
    target.write_text(target.read_text() + f"\n{line}  # the violation under test\n")
    out = lint(tmp_path)
    assert out.returncode != 0
    text = " ".join(out.stdout.split())  # contract names wrap in the report
    assert f"{contract}" in text and "BROKEN" in text, out.stdout[-3000:]
    assert " 0 broken" not in text


@pytest.mark.parametrize("entry", ["train.py", "evaluate.py", "sample.py"])
def test_entries_hold_no_logic(entry):
    """An entry composes the config, checks the one setting it reads itself (threads: `schema.entry_check`), sets
    the threads before torch loads, and calls `ldm.cli`: nothing else."""
    tree = ast.parse((ROOT / entry).read_text())
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    calls = [ast.unparse(n.func) for stmt in main.body for n in ast.walk(stmt) if isinstance(n, ast.Call)]
    assert sorted(set(calls)) == sorted(["schema.entry_check", "runtime.prepare_from_hydra", "cfg.get",
                                         f"cli.{entry[:-3]}"]), calls  # cfg.get: the settings it passes on
    assert not any(isinstance(n, (ast.If, ast.For, ast.While, ast.Try)) for n in ast.walk(main))


def yaml_keys() -> set[str]:
    keys: set[str] = set()

    def walk(o) -> None:
        if isinstance(o, dict):
            for k, v in o.items():
                keys.add(str(k))
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    for p in (ROOT / "conf").rglob("*.yaml"):
        walk(yaml.safe_load(p.read_text()))
    return keys


# `.get(key, literal)` where key is a config key, allowed where the literal is not a YAML default restated:
ALLOWED_FALLBACKS = {
    # a criterion's optional fields and their meaning are its schema, stated in the module docstring
    "ldm/analysis/claims/criteria.py": {
        "sign",
        "margin",
        "relative",
        "row",
        "min_rho",
        "a_metric",
        "b_metric",
        "b_experiment",
        "a_label",
        "b_label",
        "label",
    },
    # REPORT.md text fields a claim may leave out
    "ldm/analysis/claims/render.py": {"label", "statement", "criterion_text", "text"},
    "ldm/analysis/claims/publish.py": {"statement"},
    "ldm/analysis/claims/estimate.py": {"defaults"},  # a YAML file's defaults list, not a setting
    "ldm/diffusion/samplers.py": {"_target_"},  # a presence test
    # checkpoints saved before these hyper-parameters existed (the value every earlier run used)
    "ldm/diffusion/module.py": {"parameterization", "clip_x0"},
    "ldm/utils/wandb_offline.py": {"name", "group", "autoencoder", "seed"},  # fields of wandb's own run files
}


def fallbacks(path: Path, keys: set[str]) -> list[tuple[int, str]]:
    out = []
    for n in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute)
            and n.func.attr == "get"
            and len(n.args) == 2
            and isinstance(n.args[0], ast.Constant)
            and n.args[0].value in keys
            and not (isinstance(n.args[1], ast.Constant) and n.args[1].value is None)
        ):
            out.append((n.lineno, n.args[0].value))
    return out


def test_no_yaml_default_is_restated_in_code():
    """One default per setting: the YAML's. Older run directories are upgraded explicitly
    (`ldm.rundir.upgrade_config`, `ldm.run.evaluation.upgrade_metrics`), not by fallbacks scattered in code."""
    keys = yaml_keys()
    found = [
        f"{p.relative_to(ROOT)}:{line}: .get({key!r}, ...)"
        for p in sorted((ROOT / "ldm").rglob("*.py"))
        for line, key in fallbacks(p, keys)
        if key not in ALLOWED_FALLBACKS.get(str(p.relative_to(ROOT)), ())
    ]
    assert not found, "\n".join(found)


def test_the_fallback_scan_finds_a_restated_default(tmp_path):
    """Negative control for the scan above."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f(cfg):\n    return cfg.get('floor_subsets', 20)\n")
    assert fallbacks(bad, yaml_keys()) == [(2, "floor_subsets")]


# where a row's name may appear in code: the benchmark's job names (its results.json is keyed by them) and the
# default reference row of a table (table.reference overrides it)
ALLOWED_ROW_NAMES = {"ldm/analysis/claims/estimate.py": {"vae", "identity"}, "ldm/analysis/tables.py": {"vae"}}


def test_no_row_is_known_by_name_in_code():
    """What a row can do is asked of its class (`encodes`, `pixel_space`), not of its name: no code compares with
    or dispatches on a row's name (messages may name a row as advice)."""
    rows = {p.stem for p in (ROOT / "conf" / "autoencoder").glob("*.yaml") if not p.stem.startswith("_")}
    found = []
    for p in sorted((ROOT / "ldm").rglob("*.py")):
        rel = str(p.relative_to(ROOT))
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.Constant) and isinstance(n.value, str):
                hits = {r for r in rows if n.value in (r, f"autoencoder={r}")}  # a name to compare or dispatch on
                if hits - ALLOWED_ROW_NAMES.get(rel, set()):
                    found.append(f"{rel}:{n.lineno}: {n.value[:60]!r}")
    assert not found, "\n".join(found)


def test_the_row_name_scan_can_fail(tmp_path, monkeypatch):
    """Negative control: a module that dispatches on a row's name is found."""
    fake = tmp_path / "ldm" / "analysis"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def stage2(ae):\n    return ae != 'gan'\n")
    shutil.copytree(ROOT / "conf" / "autoencoder", tmp_path / "conf" / "autoencoder")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(AssertionError, match="bad.py:2"):
        test_no_row_is_known_by_name_in_code()


def test_long_modules_say_why():
    """No module over 300 lines without a sentence in its docstring that says why it is long."""
    long = []
    for p in sorted((ROOT / "ldm").rglob("*.py")):
        text = p.read_text()
        if text.count("\n") > 300 and "Why this module is long:" not in (ast.get_docstring(ast.parse(text)) or ""):
            long.append(f"{p.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    assert not long, long
