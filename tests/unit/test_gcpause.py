"""The collector's pause during bulk builds (common/gcpause.py)."""

from __future__ import annotations

import gc
import threading
from pathlib import Path
from typing import Any

import pytest

from bouheki.common.gcpause import without_gc


@pytest.fixture(autouse=True)
def collector_on() -> None:
    gc.enable()
    yield
    gc.enable()


def test_paused_inside_and_back_after_even_on_error() -> None:
    seen = []

    @without_gc
    def build(fail: bool) -> None:
        seen.append(gc.isenabled())
        if fail:
            raise ValueError("bad input")

    build(False)
    with pytest.raises(ValueError):
        build(True)
    assert seen == [False, False] and gc.isenabled()


def test_overlapping_builds_on_two_threads() -> None:
    """The collector comes back when the last build ends, not the first."""
    first_in, second_done, states = threading.Event(), threading.Event(), []

    @without_gc
    def long_build() -> None:
        first_in.set()
        second_done.wait(5)
        states.append(("long, after the short one ended", gc.isenabled()))

    @without_gc
    def short_build() -> None:
        states.append(("short", gc.isenabled()))

    t = threading.Thread(target=long_build)
    t.start()
    first_in.wait(5)
    short_build()
    second_done.set()
    t.join(5)
    assert states == [("short", False), ("long, after the short one ended", False)]
    assert gc.isenabled()


def test_a_collector_turned_off_by_the_caller_stays_off() -> None:
    gc.disable()
    without_gc(lambda: None)()
    assert not gc.isenabled()


def test_loading_and_compiling_run_paused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a reload builds (parse, then compile) is built with the collector off."""
    from bouheki.config import loader
    from bouheki.policy import assemble
    from bouheki.policy.env import Environment

    seen: list[tuple[str, bool]] = []

    def spy(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            seen.append((name, gc.isenabled()))
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(loader, "load_policy_set", spy("parse", loader.load_policy_set))
    monkeypatch.setattr(assemble, "lower", spy("compile", assemble.lower))
    (tmp_path / "units").mkdir()
    (tmp_path / "units" / "a.service.toml").write_text('[network]\ndeny = ["192.0.2.1"]\n')
    main = tmp_path / "bouheki.toml"
    main.write_text("")
    assemble.compile_policy_set(loader.load(main, [tmp_path]), Environment())
    assert seen == [("parse", False), ("compile", False)] and gc.isenabled()
