"""The management API on the guest's real system bus, as root and as uid 1000."""

from __future__ import annotations

import json
import subprocess
import time

from labkit import UNITS, as_user, sh

from bouheki.bus import names

DENY_71 = '[network]\nallow = ["10.0.1.0/24"]\ndeny = ["10.0.1.71"]\n'
BUSCTL = ["busctl", "--json=short"]
CALL = ["call", names.BUS_NAME, names.OBJECT_PATH, names.INTERFACE]


def busctl(*args: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
    prefix = as_user(user) if user is not None else []
    return sh(*prefix, *BUSCTL, *args, check=False)


def prop(name: str) -> object:
    r = busctl("get-property", names.BUS_NAME, names.OBJECT_PATH, names.INTERFACE, name)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["data"]


def curl_in(unit: str, url: str) -> int:
    return sh(
        "systemd-run",
        "--quiet",
        "--wait",
        "--pipe",
        "--collect",
        f"--unit={unit}",
        "--",
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "--max-time",
        "5",
        url,
        check=False,
    ).returncode


def test_introspection_shows_the_interface(daemon: None) -> None:
    r = sh("busctl", "introspect", names.BUS_NAME, names.OBJECT_PATH)
    for member in (
        "Reload",
        "ListPolicies",
        "GetStatistics",
        "Explain",
        "CheckConfig",
        "Learned",
        "ForgetLearned",
        "Reloaded",
        "Blocked",
        "PolicyGeneration",
    ):
        assert member in r.stdout


def test_root_reloads_and_uid_1000_is_denied(daemon: None) -> None:
    gen = prop("PolicyGeneration")
    r = busctl(*CALL, "Reload")
    assert r.returncode == 0, r.stderr
    assert prop("PolicyGeneration") == gen + 1  # type: ignore[operator]
    r = busctl(*CALL, "Reload", user=1000)
    assert r.returncode != 0
    # The bus lets it through; the daemon asks polkit, which grants uid 1000 nothing.
    assert "needs root or polkit" in r.stderr, r.stderr
    assert prop("PolicyGeneration") == gen + 1  # type: ignore[operator]
    # Reading is for everyone.
    r = busctl(*CALL, "GetStatistics", user=1000)
    assert r.returncode == 0, r.stderr


def test_statistics_count_the_blocks_made(daemon: None) -> None:
    (UNITS / "bh-bus-a.service.toml").write_text(DENY_71)
    assert sh("bouhekictl", "reload", check=False).returncode == 0

    def blocked() -> int:
        stats = json.loads(sh("bouhekictl", "--json", "stats").stdout)
        pol = [p for p in stats["policies"] if p["name"] == "bh-bus-a.service"]
        return pol[0]["blocked"] if pol else 0

    before = blocked()
    attempts = 5
    for _ in range(attempts):
        assert curl_in("bh-bus-a.service", "http://10.0.1.71/") == 7
    assert curl_in("bh-bus-a.service", "http://10.0.1.1/") == 0
    assert blocked() - before == attempts


def test_explain_agrees_with_the_kernel(daemon: None) -> None:
    (UNITS / "bh-bus-e.service.toml").write_text(DENY_71)
    assert sh("bouhekictl", "reload", check=False).returncode == 0
    cases = {"10.0.1.71": 7, "10.0.1.1": 0, "93.184.216.34": 7}
    for addr, curl_rc in cases.items():
        got = curl_in("bh-bus-e.service", f"http://{addr}/")
        out = json.loads(
            sh(
                "bouhekictl",
                "--json",
                "explain",
                "--unit",
                "bh-bus-e.service",
                "--comm",
                "curl",
                "--exe",
                "/usr/bin/curl",
                "--to",
                f"{addr}:80",
            ).stdout
        )
        assert got == curl_rc, addr
        assert out["verdict"] == ("blocked" if curl_rc else "allowed"), (addr, out)
    out = json.loads(
        sh(
            "bouhekictl", "--json", "explain", "--unit", "bh-bus-e.service", "--to", "10.0.1.71:80"
        ).stdout
    )
    assert out["origin_file"] == str(UNITS / "bh-bus-e.service.toml")
    assert out["origin_line"] == 3


def test_properties_changed_after_reload(daemon: None) -> None:
    mon = subprocess.Popen(
        ["busctl", "monitor", "--json=short", f"--match=type='signal',sender='{names.BUS_NAME}'"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)
        assert sh("bouhekictl", "reload", check=False).returncode == 0
        seen: list[str] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and "PropertiesChanged" not in seen:
            line = mon.stdout.readline()  # type: ignore[union-attr]
            if line.strip():
                seen.append(json.loads(line).get("member", ""))
        assert "PropertiesChanged" in seen
        assert "Reloaded" in seen
    finally:
        mon.kill()


def test_monitor_prints_a_block_within_a_second(daemon: None) -> None:
    (UNITS / "bh-bus-m.service.toml").write_text(DENY_71)
    assert sh("bouhekictl", "reload", check=False).returncode == 0
    mon = subprocess.Popen(["bouhekictl", "--json", "monitor"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(3)
        t0 = time.monotonic()
        assert curl_in("bh-bus-m.service", "http://10.0.1.71/") == 7
        t_blocked = time.monotonic()
        line = mon.stdout.readline()  # type: ignore[union-attr]
        t_seen = time.monotonic()
        ev = json.loads(line)
        assert ev["unit"] == "bh-bus-m.service" and ev["daddr"] == "10.0.1.71"
        # The attempt happened somewhere between t0 and t_blocked.
        assert t_seen - t_blocked < 1.0, f"event seen {t_seen - t0:.2f} s after the attempt began"
    finally:
        mon.kill()


def test_explain_agrees_with_the_kernel_for_every_name_form(daemon: None) -> None:
    """A 250-byte unit name, a template's instance, a unit put in a slice
    made after the reload (Slice=), and one there with a policy of its own:
    explain answers for where the unit runs, as the kernel judges it."""
    from pathlib import Path

    long = "bh-" + "e" * 239 + ".service"
    files = {
        long: DENY_71,
        "bh-etmpl@.service": DENY_71,
        "bh-eslice.slice": DENY_71,
        "bh-eslice-web.service": '[network]\ndeny = ["2001:db8::71"]\n',
    }
    for unit, text in files.items():
        (UNITS / f"{unit}.toml").write_text(text)
    assert sh("bouhekictl", "reload", check=False).returncode == 0
    cases = [(long, None), ("bh-etmpl@a.service", None), ("bh-eslice-x.service", "bh-eslice.slice"),
             ("bh-eslice-web.service", "bh-eslice.slice")]  # fmt: skip
    try:
        for i, (unit, slice_) in enumerate(cases):
            done = Path(f"/run/bh-explain-{i}")
            done.unlink(missing_ok=True)
            script = (
                f"curl -s -o /dev/null --max-time 5 http://10.0.1.71/; echo $? > {done}; sleep 120"
            )
            extra = [f"--slice={slice_}"] if slice_ else []
            sh("systemd-run", "--quiet", f"--unit={unit}", *extra, "--", "sh", "-c", script)
            deadline = time.monotonic() + 30
            while not done.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            kernel = "blocked" if done.read_text().strip() == "7" else "allowed"
            ask = [
                "--unit",
                unit,
                "--comm",
                "curl",
                "--exe",
                "/usr/bin/curl",
                "--to",
                "10.0.1.71:80",
            ]
            out = json.loads(sh("bouhekictl", "--json", "explain", *ask).stdout)
            assert out["verdict"] == kernel, (unit, out)
            sh("systemctl", "stop", unit, check=False)
        assert kernel == "allowed"  # the last, the web unit: its own policy won
    finally:
        for unit, _ in cases:
            sh("systemctl", "stop", unit, check=False)
        for unit in files:
            (UNITS / f"{unit}.toml").unlink()
        sh("bouhekictl", "reload", check=False)
