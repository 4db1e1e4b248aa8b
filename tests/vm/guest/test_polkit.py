"""Management through polkit (bus/polkit.py), against the guest's polkitd:
uid 1000 may not reload until a rules.d file grants org.bouheki.Bouheki1.manage
to a group it belongs to; without polkitd, root still reloads and uid 1000
is refused. Reading stays open to everyone throughout."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import labkit
import pytest
from labkit import sh

RULES = Path("/etc/polkit-1/rules.d/50-bouheki-lab.rules")
GROUP = "bhadmins"
GRANT = f"""
polkit.addRule(function(action, subject) {{
    if (action.id == "org.bouheki.Bouheki1.manage" && subject.isInGroup("{GROUP}"))
        return polkit.Result.YES;
}});
"""


def generation() -> int:
    return int(json.loads(sh("bouhekictl", "--json", "status").stdout)["generation"])


def reload_as_1000() -> tuple[int, dict]:
    r = sh(*labkit.as_user(1000), "bouhekictl", "--json", "reload", check=False)
    return r.returncode, json.loads(r.stdout) if r.stdout.strip() else {}


@pytest.fixture
def polkit(daemon: None) -> Iterator[None]:
    sh("groupadd", "-f", GROUP)
    sh("systemctl", "unmask", "polkit.service", check=False)
    sh("systemctl", "start", "polkit.service")
    yield
    RULES.unlink(missing_ok=True)
    sh("gpasswd", "-d", "user", GROUP, check=False)
    sh("systemctl", "unmask", "polkit.service", check=False)


def test_polkit_decides_who_else_may_reload(polkit: None) -> None:
    gen = generation()
    code, out = reload_as_1000()
    assert code == 4, out
    assert out["error"]["dbus_error"] == "org.bouheki.Bouheki1.Error.AccessDenied"
    assert generation() == gen
    # Reading needs no authorization.
    assert sh(*labkit.as_user(1000), "bouhekictl", "stats", check=False).returncode == 0

    sh("usermod", "-aG", GROUP, "user")
    RULES.write_text(GRANT)
    # polkitd reads rules.d again when it changes.
    assert labkit.wait_for(lambda: reload_as_1000()[0] == 0, 30), reload_as_1000()
    assert generation() > gen


def test_without_polkitd_root_reloads_and_others_are_refused(polkit: None) -> None:
    sh("usermod", "-aG", GROUP, "user")
    RULES.write_text(GRANT)  # would grant it, if polkit could be asked
    sh("systemctl", "stop", "polkit.service")
    sh("systemctl", "mask", "--runtime", "polkit.service")
    try:
        gen = generation()
        assert sh("bouhekictl", "reload", check=False).returncode == 0
        assert generation() == gen + 1
        code, out = reload_as_1000()
        assert code == 4, out
        assert "polkit" in out["error"]["message"]
        assert generation() == gen + 1
    finally:
        sh("systemctl", "unmask", "--runtime", "polkit.service", check=False)
