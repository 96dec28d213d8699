"""The evaluator classifier: accuracy on digits, caching, and the FID/KID sanity ladders on its features."""

from __future__ import annotations

import pytest
import torch

from ldm.data.digits import DigitsDataModule
from ldm.metrics.evaluator import cache_key, load_or_train
from ldm.metrics.features import FeatureMetrics

DATA_CFG = {"_target_": "ldm.data.digits.DigitsDataModule", "image_size": 16, "split_seed": 0, "batch_size": 64}
FULL = {"steps": 600, "batch_size": 64, "lr": 2e-3, "width": 16, "feature_dim": 64, "seed": 0}  # conf default


@pytest.fixture(scope="module")
def digits():
    dm = DigitsDataModule(image_size=16)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


SHORT = {**FULL, "steps": 150}  # enough for the ladders below (the accuracy of the full recipe: its own slow test)


@pytest.fixture(scope="module")
def evaluator(digits, cache_dir):
    return load_or_train(digits, DATA_CFG, SHORT, cache_dir)


@pytest.fixture(scope="module")
def fm(evaluator, digits):
    return FeatureMetrics(evaluator.features, evaluator.feature_dim, digits.split("train").images, kid_subsets=50,
                          kid_subset_size=1000, prdc_k=5)


@pytest.mark.slow
def test_evaluator_accuracy(digits, tmp_path):
    evaluator = load_or_train(digits, DATA_CFG, FULL, tmp_path)  # the recipe of conf/metrics/features/evaluator.yaml
    assert evaluator.trained and evaluator.accuracy >= 0.95  # measured 0.978 on the 180 test digits
    assert evaluator.feature_dim >= 64


def test_the_short_evaluator_classifies(evaluator):
    assert evaluator.trained and evaluator.accuracy >= 0.8


@pytest.mark.slow  # over 5 s here: the slow tier (CI runs it after the fast one)
def test_cache_loads_second_time_and_retrains_on_change(digits, tmp_path):
    small = {**FULL, "steps": 20}
    first = load_or_train(digits, DATA_CFG, small, tmp_path)
    again = load_or_train(digits, {**DATA_CFG, "batch_size": 7}, small, tmp_path)  # batch size: same data
    assert first.trained and not again.trained and again.path == first.path
    x = digits.split("test").images[:8]
    assert torch.equal(first.features(x), again.features(x))
    other = load_or_train(digits, {**DATA_CFG, "split_seed": 1}, small, tmp_path)
    assert other.trained and other.path != first.path
    assert cache_key(DATA_CFG, small) != cache_key({**DATA_CFG, "image_size": 8}, small)
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """The ldm sources copied to a folder the code hash reads instead of the installed package."""
    import shutil

    from ldm.utils import cache

    copy = tmp_path / "ldm"
    shutil.copytree(cache.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "PACKAGE", copy)
    cache.code_hash.cache_clear()
    yield copy
    monkeypatch.undo()
    cache.code_hash.cache_clear()


@pytest.mark.slow  # over 5 s here: the slow tier (CI runs it after the fast one)
def test_changed_evaluator_code_retrains_it_other_code_does_not(digits, tmp_path, package_copy):
    from ldm.utils import cache

    small = {**FULL, "steps": 20}
    first = load_or_train(digits, DATA_CFG, small, tmp_path / "c")
    (package_copy / "nets" / "unet.py").write_text((package_copy / "nets" / "unet.py").read_text() + "\n# edit\n")
    cache.code_hash.cache_clear()
    assert not load_or_train(digits, DATA_CFG, small, tmp_path / "c").trained  # not the evaluator's code
    augment = package_copy / "metrics" / "evaluator.py"
    augment.write_text(augment.read_text().replace("pad = max(1, x.shape[-1] // 8)", "pad = max(1, x.shape[-1] // 4)"))
    cache.code_hash.cache_clear()
    changed = load_or_train(digits, DATA_CFG, small, tmp_path / "c")
    assert changed.trained and changed.path != first.path


@pytest.mark.slow  # over 5 s here: the slow tier (CI runs it after the fast one)
def test_a_truncated_evaluator_is_moved_aside_and_retrained(digits, tmp_path):
    small = {**FULL, "steps": 20}
    first = load_or_train(digits, DATA_CFG, small, tmp_path)
    f = first.path / "evaluator.pt"
    f.write_bytes(f.read_bytes()[:100])
    again = load_or_train(digits, DATA_CFG, small, tmp_path)
    assert again.trained and again.accuracy == first.accuracy  # the same recipe, the same classifier
    assert len(list((tmp_path / "evaluator" / ".bad").iterdir())) == 1


def test_fid_of_a_set_with_itself_is_zero(fm, digits):
    train = digits.split("train").images
    assert fm.fid(fm.embed(train)) == pytest.approx(0.0, abs=1e-6)


def test_fid_and_kid_ladder(fm, digits):
    """Real test vs train is small; adding noise of sigma 0.1, 0.2, 0.4 raises FID and KID strictly (sigma 0.05
    moves the features less than the floor's own noise: 0.080 vs 0.083 on the stratified test split)."""
    test = digits.split("test").images
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(test.shape, generator=g)
    floor = fm.fid(fm.embed(test))
    fids, kids = [floor], [fm.kid(fm.embed(test))[0]]
    for sigma in (0.1, 0.2, 0.4):
        noisy = fm.embed((test + sigma * noise).clamp(-1, 1))
        fids.append(fm.fid(noisy))
        kids.append(fm.kid(noisy)[0])
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
    assert all(a < b for a, b in zip(kids, kids[1:])), kids
    assert fids[-1] > 3 * floor  # measured 66x


def test_prdc_of_identical_sets(fm, digits):
    out = fm.prdc(fm.embed(digits.split("train").images))  # the reference set itself
    assert out["precision"] == out["recall"] == out["coverage"] == 1.0
    # 300 real images against 300 other real images (PRDC takes an equal-size reference): the real-data level,
    # symmetric in precision and recall; one image repeated 300 times has no recall and no coverage
    subset = fm.prdc(fm.embed(digits.split("train").images[:300]))
    assert 0.6 < subset["precision"] < 1 and 0.6 < subset["recall"] < 1
    assert abs(subset["precision"] - subset["recall"]) < 0.15
    collapsed = fm.prdc(fm.embed(digits.split("train").images[:1].repeat(300, 1, 1, 1)))
    assert collapsed["recall"] < 0.1 and collapsed["coverage"] < 0.1


def test_class_accuracy_ladder(evaluator, digits):
    test = digits.split("test")
    assert evaluator.accuracy_on(test.images, test.labels) == evaluator.accuracy  # the real images: its own accuracy
    g = torch.Generator().manual_seed(0)
    wrong = test.labels[torch.randperm(len(test), generator=g)]
    assert evaluator.accuracy_on(test.images, wrong) < 0.25  # labels of other digits: near chance (0.1)
    noisy = [evaluator.accuracy_on((test.images + s * torch.randn(test.images.shape, generator=g)).clamp(-1, 1),
                                   test.labels) for s in (0.3, 1.0, 3.0)]
    assert evaluator.accuracy >= noisy[0] > noisy[-1] and noisy[-1] < 0.5


@pytest.mark.slow  # over 5 s here: the slow tier (CI runs it after the fast one)
def test_evaluate_reports_class_accuracy_of_reconstructions(evaluator, digits, cache_dir, tmp_path):
    """Identity reconstructs exactly, so its recon/class_accuracy is the evaluator's own test accuracy;
    a decoder that returns another digit's image keeps the pixels' statistics but not the classes."""
    from ldm.autoencoders.identity import Identity
    from ldm.run.evaluation import evaluate

    class OtherDigit(Identity):
        def decode(self, z):
            return z.roll(1, dims=0)

    from ldm.utils.config import plain
    from tests.conftest import compose_cfg

    cfg = {**plain(compose_cfg([]).metrics), "interp_pairs": 2, "interp_steps": 3, "kid_subsets": 10,
           "floor_subsets": 3,
           "features": {"_target_": "ldm.metrics.evaluator.EvaluatorFeatures", **SHORT}}  # the cached evaluator
    args = (None, digits, cfg, DATA_CFG, str(cache_dir))
    same = evaluate(Identity(image_size=16, in_channels=1, num_vis=8), *args, tmp_path / "same", torch.device("cpu"))
    assert same["recon/class_accuracy"] == same["eval/evaluator_acc"] == evaluator.accuracy
    other = evaluate(OtherDigit(image_size=16, in_channels=1, num_vis=8), *args, tmp_path / "other",
                     torch.device("cpu"))
    assert other["recon/class_accuracy"] < 0.25
    # the same 180 real digits, reordered: rFID cannot see it (it equals identity's: real test vs train), class
    # accuracy can
    assert other["recon/rfid"] == pytest.approx(same["recon/rfid"], rel=1e-6)
    assert same["eval/fid_floor_lo"] <= same["eval/fid_floor"] <= same["eval/fid_floor_hi"]


@pytest.mark.slow  # over 5 s here: the slow tier (CI runs it after the fast one)
def test_an_evaluator_entry_holding_a_pickle_payload_is_refused_and_retrained(digits, tmp_path, monkeypatch):
    """Someone rewrote evaluator.pt and its manifest: the weights-only load refuses it, nothing runs."""
    import json

    from ldm.utils import cache
    from tests.test_security import pickle_bomb

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    small = {**FULL, "steps": 20}
    first = load_or_train(digits, DATA_CFG, small, tmp_path / "c")
    f, target = first.path / "evaluator.pt", tmp_path / "pwned"
    pickle_bomb(f, target)
    manifest = json.loads((first.path / "manifest.json").read_text())
    manifest["files"]["evaluator.pt"] = {"size": f.stat().st_size, "sha256": cache.sha256(f)}
    (first.path / "manifest.json").write_text(json.dumps(manifest))
    again = load_or_train(digits, DATA_CFG, small, tmp_path / "c")
    assert again.trained and not target.exists()


def test_features_of_batches_equal_features_of_the_whole(fm, digits):
    """A split read batch by batch (as evaluation reads it) embeds to what the whole tensor embeds to (up to the
    float rounding of convolutions at another batch size)."""
    from ldm.data.base import batches

    test = digits.split("test")
    whole = fm.embed(test.images)
    assert torch.allclose(fm.embed(x for x, _ in batches(test, batch_size=7)), whole, rtol=1e-5, atol=1e-6)
    assert fm.fid(whole) == pytest.approx(fm.fid(fm.embed(x for x, _ in batches(test, batch_size=50))), rel=1e-5)
