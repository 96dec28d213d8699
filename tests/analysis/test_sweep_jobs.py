"""Known answers for sweep_jobs: job counts and values of Hydra multirun overrides, checked against Hydra."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from ldm.analysis.sweep_jobs import count_jobs, expand
from ldm.errors import ConfigError

CONF = Path(__file__).resolve().parents[2] / "conf"


def hydra_jobs(overrides: list[str], config_loader=None) -> list[dict[str, str]]:
    """What Hydra's BasicSweeper itself launches for these overrides, as {key: value} per job."""
    parsed = OverridesParser.create(config_loader=config_loader).parse_overrides(overrides)
    return [dict(o.split("=", 1) for o in job) for job in BasicSweeper.split_arguments(parsed, None)[0]]


def test_glob_over_the_real_autoencoder_group_times_three_seeds():
    overrides = ["autoencoder=glob(*,exclude=[gan])", "seed=range(3)"]
    rows = {f[:-5] for f in os.listdir(CONF / "autoencoder")
            if f.endswith(".yaml") and not f.startswith("_") and f != "gan.yaml"}
    jobs = expand(overrides)
    assert len(jobs) == count_jobs(overrides) == 3 * len(rows) == 27  # 9 rows today; the count follows conf/
    assert {j["autoencoder"] for j in jobs} == rows and {j["seed"] for j in jobs} == {"0", "1", "2"}
    # the same jobs, in the same order, as Hydra's BasicSweeper with Hydra's real config loader on conf/
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        assert jobs == hydra_jobs(overrides, GlobalHydra.instance().config_loader())


def test_glob_on_a_conf_dir_of_its_own(tmp_path):
    (tmp_path / "grp" / "sub").mkdir(parents=True)
    for name in ["a.yaml", "b.yaml", "_c.yaml", "notes.txt", "sub/d.yaml"]:
        (tmp_path / "grp" / name).write_text("x: 1\n")
    assert expand(["grp=glob(*,exclude=_*)"], conf_dir=tmp_path) == [{"grp": "a"}, {"grp": "b"}]
    assert count_jobs(["grp=glob(*)"], conf_dir=tmp_path) == 3  # _c too; a sub-folder or a .txt is no option
    assert expand(["grp/sub=glob(*)"], conf_dir=tmp_path) == [{"grp/sub": "d"}]
    with pytest.raises(ConfigError, match="nogroup"):
        expand(["nogroup=glob(*)"], conf_dir=tmp_path)


def test_range_choice_and_products_match_basic_sweeper():
    assert [j["s"] for j in expand(["s=range(0,10,3)"])] == ["0", "3", "6", "9"]
    assert count_jobs(["s=range(3)"]) == 3 and count_jobs(["c=choice(x,y)"]) == 2
    overrides = ["a=x,y", "b=1,2,3"]
    jobs = expand(overrides)
    assert len(jobs) == count_jobs(overrides) == 6
    assert jobs == hydra_jobs(overrides)
    assert [(j["a"], j["b"]) for j in jobs[:3]] == [("x", "1"), ("x", "2"), ("x", "3")]  # the last varies fastest
    mixed = ["lr=1e-6,3e-4", "+foo=bar", "stage1.max_steps=100", "x=[1,2]", "c=choice(p,q)", "lr=0.1,0.2,0.3"]
    assert expand(mixed) == hydra_jobs(mixed) and count_jobs(mixed) == 6  # a repeated key: the last one wins


def test_non_sweep_values_are_one_job_each():
    assert expand(["x=[1,2]"]) == [{"x": "[1,2]"}]
    assert expand(["stage1.max_steps=100", "+foo=b"]) == [{"stage1.max_steps": "100", "+foo": "b"}]
    assert expand(["lr=1e-6"]) == [{"lr": "1e-06"}]  # Hydra passes the float as Python prints it
    assert expand(["-m", "seed=0,1", "hydra.sweep.dir=/tmp/x", "hydra/launcher=joblib"]) == [{"seed": "0"},
                                                                                           {"seed": "1"}]


def test_the_comma_cases_the_old_parser_handled():
    assert count_jobs(["seed=0,1,2"]) == 3
    common = ["stage1.max_steps=100", "stage2.max_steps=200", "metrics.num_samples=100"]
    assert len(expand(common + ["autoencoder=vae,gan", "seed=0,1,2"])) == 6
    job = expand(common + ["autoencoder=gan_inversion_matched", "autoencoder.encoder_steps=50"])
    assert job == [{"stage1.max_steps": "100", "stage2.max_steps": "200", "metrics.num_samples": "100",
                    "autoencoder": "gan_inversion_matched", "autoencoder.encoder_steps": "50"}]
    assert count_jobs(["autoencoder=vae", "x=[a,b]"]) == 1


@pytest.mark.parametrize("bad, says", [("seed=interval(0,1)", "interval"), ("a=b=c(", "a=b=c\\("),
                                        ("s=range(1,5,0)", "range")])
def test_bad_overrides_raise_one_line_config_errors(bad, says):
    with pytest.raises(ConfigError, match=says) as e:
        expand([bad])
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError):
        count_jobs(["seed=0,1", bad])
