"""The files under dbus/: well-formed, in agreement with the code, and enforced by dbus-daemon."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_bus_support import (
    INTERFACE_FILE,
    POLICY_FILE,
    PYTHON,
    FakeEngine,
    PrivateBus,
    ServerThread,
    as_engine,
    run_ctl,
)

from bouheki.bus import names, serve
from bouheki.dbuslib import MessageBus

# The introspection format as the D-Bus specification describes it. (The DTD
# that dbus ships is not valid DTD syntax, and none is installed locally.)
INTROSPECT_DTD = """
<!ELEMENT node (node|interface)*>
<!ATTLIST node name CDATA #IMPLIED>
<!ELEMENT interface (method|signal|property|annotation)*>
<!ATTLIST interface name CDATA #REQUIRED>
<!ELEMENT method (arg|annotation)*>
<!ATTLIST method name CDATA #REQUIRED>
<!ELEMENT signal (arg|annotation)*>
<!ATTLIST signal name CDATA #REQUIRED>
<!ELEMENT arg EMPTY>
<!ATTLIST arg name CDATA #IMPLIED type CDATA #REQUIRED direction (in|out) #IMPLIED>
<!ELEMENT property (annotation)*>
<!ATTLIST property name CDATA #REQUIRED type CDATA #REQUIRED
                   access (read|write|readwrite) #REQUIRED>
<!ELEMENT annotation EMPTY>
<!ATTLIST annotation name CDATA #REQUIRED value CDATA #REQUIRED>
"""

AS_UID_1000 = ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups"]


def xmllint(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("xmllint") is None:
        pytest.skip("xmllint is missing: apt-get install -y libxml2-utils")
    return subprocess.run(["xmllint", "--noout", "--nonet", *args], capture_output=True, text=True)


def test_files_are_well_formed_xml() -> None:
    result = xmllint(str(INTERFACE_FILE), str(POLICY_FILE))
    assert result.returncode == 0, result.stderr


def test_interface_file_is_valid_introspection_data(tmp_path: Path) -> None:
    dtd = tmp_path / "introspect.dtd"
    dtd.write_text(INTROSPECT_DTD)
    result = xmllint("--dtdvalid", str(dtd), str(INTERFACE_FILE))
    assert result.returncode == 0, result.stderr


def _members(xml: str) -> dict[str, object]:
    """What clients depend on: members, argument types and directions, property access."""
    node = ET.fromstring(xml)
    (iface,) = [i for i in node.iter("interface") if i.get("name") == names.INTERFACE]
    return {
        "methods": {
            m.get("name"): [(a.get("type"), a.get("direction", "in")) for a in m.iter("arg")]
            for m in iface.iter("method")
        },
        "signals": {
            s.get("name"): [a.get("type") for a in s.iter("arg")] for s in iface.iter("signal")
        },
        "properties": {
            p.get("name"): (p.get("type"), p.get("access")) for p in iface.iter("property")
        },
    }


def test_interface_file_matches_the_running_object() -> None:
    async def runtime_introspection(address: str) -> str:
        server = await MessageBus(bus_address=address).connect()
        service = await serve(as_engine(FakeEngine()), server)
        client = await MessageBus(bus_address=address).connect()
        try:
            node = await client.introspect(names.BUS_NAME, names.OBJECT_PATH)
            return ET.tostring(node.to_xml(), encoding="unicode")
        finally:
            await service.close()
            client.disconnect()
            server.disconnect()

    bus = PrivateBus()
    try:
        runtime = asyncio.run(runtime_introspection(bus.address))
    finally:
        bus.close()
    installed = INTERFACE_FILE.read_text()
    assert ET.fromstring(installed).get("name") == names.OBJECT_PATH
    assert _members(installed) == _members(runtime)


def test_policy_names_the_right_bus_name_and_methods() -> None:
    root = ET.parse(POLICY_FILE).getroot()
    default = root.find("policy[@context='default']")
    assert default is not None
    readable = {
        rule.get("send_member")
        for rule in default.findall("allow")
        if rule.get("send_interface") == names.INTERFACE
    }
    # Every method: Reload is authorized by the daemon (polkit), the rest are reads.
    assert readable == {
        *("ListPolicies", "GetStatistics", "Explain", "CheckConfig"),
        *("Reload", "Learned", "ForgetLearned"),
    }
    assert all(
        rule.get("send_destination") == names.BUS_NAME
        for rule in default.findall("allow")
        if rule.get("send_destination")
    )
    assert root.find(f"policy[@user='root']/allow[@own='{names.BUS_NAME}']") is not None


def test_polkit_action_is_the_one_the_daemon_asks_for() -> None:
    actions = ET.parse(POLICY_FILE.with_suffix(".policy")).getroot()
    (action,) = actions.findall("action")
    assert action.get("id") == names.ACTION_MANAGE
    defaults = action.find("defaults")
    assert defaults is not None
    assert defaults.findtext("allow_active") == "auth_admin_keep"
    assert defaults.findtext("allow_any") == "auth_admin"


def test_dbus_daemon_rejects_a_broken_policy(tmp_path: Path) -> None:
    # Shows that "the daemon started" below is a real check of the file.
    broken = tmp_path / "broken.conf"
    broken.write_text(POLICY_FILE.read_text().replace("send_member=", "send_membre=", 1))
    with pytest.raises(RuntimeError, match="did not start"):
        PrivateBus(system_like=True, policy=broken).close()


# --- the policy, enforced by a private system-like bus ---------------------------------


@pytest.fixture(scope="module")
def system_bus() -> Iterator[tuple[PrivateBus, ServerThread]]:
    if os.geteuid() != 0:
        pytest.skip("needs root, to run clients as another uid")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    bus = PrivateBus(system_like=True)  # includes dbus/org.bouheki.Bouheki1.conf
    server = ServerThread(bus.address, properties_interval=0.05)
    yield bus, server
    server.close()
    bus.close()


def test_unprivileged_callers_may_read_but_not_reload(
    system_bus: tuple[PrivateBus, ServerThread],
) -> None:
    bus, server = system_bus
    # The bus lets the call through; the daemon asks polkit, which is not
    # on this bus: only root may reload.
    denied = run_ctl(bus, "--json", "reload", prefix=AS_UID_1000)
    assert denied.returncode == 4, denied.stderr
    error = json.loads(denied.stdout)["error"]
    assert error["dbus_error"] == names.ERROR_ACCESS_DENIED
    assert "polkit" in error["message"]
    assert server.engine.generation == 1  # the engine was not asked
    for command in (["stats"], ["status"], ["policies"], ["explain", "--to", "10.0.1.71:443"]):
        allowed = run_ctl(bus, "--json", *command, prefix=AS_UID_1000)
        assert allowed.returncode == 0, (command, allowed.stderr)
    # A path would make the root daemon read a file for the caller: refused.
    probe = run_ctl(bus, "--json", "check-config", "--daemon", "/etc/shadow", prefix=AS_UID_1000)
    assert probe.returncode == 4
    assert json.loads(probe.stdout)["error"]["dbus_error"] == names.ERROR_ACCESS_DENIED
    assert "/etc/shadow" not in server.engine.checked
    # Root may do both.
    assert run_ctl(bus, "reload").returncode == 0
    assert run_ctl(bus, "check-config", "--daemon", "/etc/bouheki").returncode == 0


def test_only_root_may_own_the_name(system_bus: tuple[PrivateBus, ServerThread]) -> None:
    script = (
        "import asyncio\n"
        "from bouheki.dbuslib import MessageBus\n"
        "async def main():\n"
        f"    bus = await MessageBus(bus_address={system_bus[0].address!r}).connect()\n"
        "    try:\n"
        "        await bus.request_name('org.bouheki.Bouheki1')\n"
        "    except Exception as e:\n"
        "        print(e.type)\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run(
        [*AS_UID_1000, PYTHON, "-c", script],
        env=system_bus[0].env(),
        capture_output=True,
        text=True,
        timeout=10,
        cwd="/",
    )
    assert result.stdout.strip() == "org.freedesktop.DBus.Error.AccessDenied", result.stderr


def test_blocked_signals_reach_root_only(system_bus: tuple[PrivateBus, ServerThread]) -> None:
    bus, server = system_bus
    monitors = {"root": monitor(bus, []), "user": monitor(bus, AS_UID_1000)}
    # A hung read must fail this test, not hang the whole run (the bounds are
    # generous: a loaded CI machine once needed more than 10 s here).
    watchdogs = [threading.Timer(60, proc.kill) for proc in monitors.values()]
    for watchdog in watchdogs:
        watchdog.start()
    try:
        for proc in monitors.values():
            assert proc.stderr is not None
            assert "Following" in proc.stderr.readline()  # subscribed
        server.call(lambda: server.engine.fire_blocked(1))
        server.run(server.engine.reload())  # Reloaded: public, and sent after Blocked
        root_events = [json.loads(monitors["root"].stdout.readline())["event"] for _ in range(2)]
        user_event = json.loads(monitors["user"].stdout.readline())["event"]
        assert root_events == ["blocked", "reloaded"]
        assert user_event == "reloaded"  # signals arrive in order: no Blocked before it
    finally:
        for proc in monitors.values():
            proc.send_signal(signal.SIGINT)
        for proc in monitors.values():
            proc.communicate(timeout=30)
        for watchdog in watchdogs:
            watchdog.cancel()
    assert [proc.returncode for proc in monitors.values()] == [0, 0]  # Ctrl-C: a normal end


def monitor(bus: PrivateBus, prefix: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [*prefix, PYTHON, "-m", "bouheki.ctl", "monitor", "--json"],
        env=bus.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
        # Ctrl-C as a terminal sends it: a shell that runs this suite in the
        # background (as `make test &` does) has SIGINT ignored, and an
        # ignored signal stays ignored across exec.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    return proc
