"""The policy ids kept for a successor daemon (service/policy_ids.py)."""

from __future__ import annotations

from pathlib import Path

from bouheki.service import policy_ids


def test_saved_and_read_back(tmp_path: Path) -> None:
    policy_ids.save(tmp_path, 7, {"units/a.service.toml": 0, "host": 3})
    saved = policy_ids.load(tmp_path)
    assert saved == policy_ids.SavedIds(7, {"units/a.service.toml": 0, "host": 3})
    assert saved.names() == {0: "units/a.service.toml", 3: "host"}
    assert not list(tmp_path.glob("*.tmp"))  # written whole, then renamed


def test_nothing_kept_or_a_broken_file_means_fresh_ids(tmp_path: Path) -> None:
    assert policy_ids.load(tmp_path) is None
    for text in ("", "{", '{"generation": 1}', '{"generation": "x", "ids": {}}', "[]"):
        (tmp_path / policy_ids.FILE).write_text(text)
        assert policy_ids.load(tmp_path) is None, text


def test_an_unwritable_directory_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    policy_ids.save(tmp_path / "missing", 1, {"a": 0})  # logs, does not raise
    assert policy_ids.load(tmp_path / "missing") is None
