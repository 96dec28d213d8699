"""ldm.utils.cache: an entry is usable only when every file matches its manifest; damaged entries are moved aside."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from ldm.utils import cache


def publish(tmp_path: Path, key: str = "k", **files: bytes) -> cache.Entry:
    entry = cache.Entry(tmp_path, "stage1", key, parts={"seed": 0})
    with entry.locked():
        entry.publish({name: (lambda data: lambda tmp: Path(tmp).write_bytes(data))(data)
                       for name, data in files.items()}, {"stage1/steps": 7})
    return entry


def test_published_entry_is_usable_with_its_info_and_checksums(tmp_path):
    entry = publish(tmp_path, a=b"hello", b=b"world!")
    fresh = cache.Entry(tmp_path, "stage1", "k")
    with fresh.locked():
        assert fresh.usable()
    assert fresh.info() == {"stage1/steps": 7}
    # sha256 of b"hello", a known answer
    assert fresh.sha256("a") == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    manifest = json.loads(entry.path("manifest.json").read_text())
    assert manifest["files"]["b"]["size"] == 6 and manifest["parts"] == {"seed": 0}
    assert not list(tmp_path.rglob("*.tmp"))


def test_absent_entry_is_not_usable_and_nothing_is_moved(tmp_path):
    entry = cache.Entry(tmp_path, "stage1", "nope")
    with entry.locked():
        assert entry.problem() == "missing" and not entry.usable()
    assert not (tmp_path / "stage1" / ".bad").exists()


@pytest.mark.parametrize("damage, reason", [
    (lambda e: e.path("a").write_bytes(b"hel"), "a has 3 bytes, the manifest says 5"),
    (lambda e: e.path("a").write_bytes(b"HELLO"), "a does not match its sha256"),  # same size, other bytes
    (lambda e: e.path("b").unlink(), "b is missing"),
    (lambda e: e.path("manifest.json").unlink(), "no manifest.json"),
    (lambda e: e.path("manifest.json").write_text("{\"files\": "), "unreadable manifest.json"),
])
def test_damaged_entry_is_moved_aside_and_logged(tmp_path, caplog, damage, reason):
    entry = publish(tmp_path, a=b"hello", b=b"world!")
    damage(entry)
    with caplog.at_level(logging.WARNING, logger="ldm.utils.cache"), entry.locked():
        assert reason in entry.problem()
        assert not entry.usable()
    assert not entry.dir.exists()
    moved = list((tmp_path / "stage1" / ".bad").iterdir())
    assert len(moved) == 1 and moved[0].name.startswith("k.")
    assert str(entry.dir) in caplog.text and str(moved[0]) in caplog.text and reason in caplog.text
    publish(tmp_path, a=b"hello", b=b"world!")  # and the key can be rebuilt
    with entry.locked():
        assert entry.usable()


def test_temporaries_of_a_killed_writer_are_removed_under_the_lock(tmp_path):
    stray = tmp_path / "stage1" / ".k.12345.tmp"
    stray.mkdir(parents=True)
    (stray / "autoencoder.ckpt").write_bytes(b"half")
    other = tmp_path / "stage1" / ".other.1.tmp"  # another key's writer may still be alive: left alone
    other.mkdir()
    with cache.Entry(tmp_path, "stage1", "k").locked():
        pass
    assert not stray.exists() and other.exists()


def test_a_failing_writer_publishes_nothing(tmp_path):
    entry = cache.Entry(tmp_path, "stage1", "k")

    def boom(tmp):
        Path(tmp).write_bytes(b"partial")
        raise RuntimeError("disk full")

    with entry.locked(), pytest.raises(RuntimeError):
        entry.publish({"a": boom}, {})
    assert not entry.dir.exists() and not list((tmp_path / "stage1").glob(".*.tmp"))


def test_code_hash_of_parts_differs_from_the_whole_and_between_parts():
    whole, evaluator, data = cache.code_hash(), cache.code_hash("metrics/evaluator.py"), cache.code_hash("data")
    assert len({whole, evaluator, data}) == 3
    assert cache.code_hash("data") == data  # stable
    assert cache.key({"a": 1}, code=evaluator) != cache.key({"a": 1}, code=data)
