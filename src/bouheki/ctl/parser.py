"""bouhekictl's command line: the argparse tree, with help that teaches by example."""

from __future__ import annotations

import argparse
from typing import Callable, Optional

from .. import __version__
from ..bus.names import BUS_NAME, ENV_BUS_ADDRESS
from .errors import EXIT_CODES_HELP

PROG = "bouhekictl"
DEFAULT_TIMEOUT = 30.0

DESCRIPTION = f"""\
Query and control bouheki, the per-unit egress firewall, over D-Bus ({BUS_NAME}).
Output is a human-readable table; add --json for stable machine-readable keys."""

EPILOG = f"""\
examples:
  bouhekictl status                       is it running, which generation, how many blocks
  sudo bouhekictl reload                  apply edited policies: all or nothing
  bouhekictl check-config                 validate the configuration without the daemon
  bouhekictl check-config old.yaml        ... or another main file (TOML, or legacy YAML)
  bouhekictl explain --unit nginx.service --comm curl --to 10.0.1.71:443
                                          which rule (file and line) decides a connection
  bouhekictl policies                     policies, their units, modes and files
  bouhekictl stats --json | jq .blocked   counters for scripts
  sudo bouhekictl monitor                 follow blocked connections live (Ctrl-C stops)
  sudo bouhekictl suggest app.service     a policy allowing what app.service was seen to do

{EXIT_CODES_HELP}

environment:
  {ENV_BUS_ADDRESS}   D-Bus address to use instead of the system bus when neither
                        --bus nor --address is given (e.g. a private test bus)

See bouhekictl(8) and org.bouheki.Bouheki1(5)."""

EXPLAIN_EPILOG = """\
examples:
  bouhekictl explain --unit nginx.service --comm nginx --exe /usr/sbin/nginx \\
      --uid 33 --gid 33 --to 10.0.1.71:443
  bouhekictl explain --unit app.service --to [2001:db8::1]:53 --proto udp
  bouhekictl explain --to 192.0.2.10:22        a process outside every unit ([host] policy)

The verdict comes from the daemon's Python twin of the kernel classifier, for
the policy generation running now; nothing is sent on the network. Give a
port when the policy has port rules: without one, the reason tells how the
missing port was treated."""

CHECK_EPILOG = """\
Works without the daemon, like `nginx -t`: the files are read here, with your
permissions. Exit status 0 if valid, 5 if not; each problem is printed as
file:line: message.

examples:
  bouhekictl check-config                       bouheki.toml and units/ in the search paths
  bouhekictl check-config /srv/new/bouheki.toml  another main file, same unit policies
  bouhekictl check-config --json legacy.yaml | jq '.problems[]'"""

MONITOR_EPILOG = """\
Prints one line per Blocked signal (one JSON object per line with --json) and
a line per reload. The daemon sends at most 20 Blocked signals a second; a
line notes how many were dropped before it. Blocked signals are delivered to
root only (see the bus policy), so run it as root. Ctrl-C stops (exit 0).

examples:
  sudo bouhekictl monitor
  sudo bouhekictl monitor --json | jq 'select(.unit == "nginx.service")'"""


def parse_destination(text: str) -> tuple[str, Optional[int]]:
    """ADDR, ADDR:PORT or [IPV6]:PORT; a bare IPv6 address has no port.

    Only the syntax is checked here; whether the address is valid is the
    daemon's call (it answers BadRequest), so bouhekictl and the D-Bus API
    accept the same inputs.
    """
    address, port = text, None
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1 : close + 2] not in ("", ":"):
            raise argparse.ArgumentTypeError(f"bad destination {text!r}: use [IPV6]:PORT")
        address = text[1:close]
        rest = text[close + 2 :]
        port = _port(rest, text) if text[close + 1 :] else None
    elif text.count(":") == 1:
        address, rest = text.split(":")
        port = _port(rest, text)
    if not address:
        raise argparse.ArgumentTypeError(f"bad destination {text!r}: the address is missing")
    return address, port


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"bad port in {whole!r}: expected 0-65535")
    return int(text)


LEARN_EPILOG = """\
Learning: give the unit a policy of its own with learn = true (in monitor
mode its traffic flows while bouheki records it), run it through its usual
work, then turn what was seen into a policy:

  cat > /etc/bouheki/units/app.service.toml <<EOF
  mode = "monitor"
  learn = true
  EOF
  sudo systemctl reload bouheki
  sudo bouhekictl learned app.service            destination, port, protocol, exe, uid, counts
  sudo bouhekictl suggest app.service --ipv4-prefix 24 > app.service.toml
  sudo install -m 644 app.service.toml /etc/bouheki/units/ && sudo systemctl reload bouheki
  sudo bouhekictl forget app.service             start learning afresh

What is learned is kept in the kernel, per policy, in a bounded map (its
size and what did not fit are in `bouhekictl learned --json`); it survives
reloads and restarts of the daemon, not an upgrade that changes the programs."""

STATS_EPILOG = """\
metrics:
  bouhekictl stats --format=prometheus --output \\
      /var/lib/prometheus/node-exporter/bouheki.prom
  is what bouheki-metrics.timer runs every 15 s (systemctl enable --now
  bouheki-metrics.timer); bouheki_up is 0 when the daemon does not answer.
"""


def _uint(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    return int(text)


def _prefix(most: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.isdigit() or not 0 <= int(text) <= most:
            raise argparse.ArgumentTypeError(f"expected a prefix length 0-{most}, got {text!r}")
        return int(text)

    return parse


def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """Options accepted before and after the command (`--json stats` = `stats --json`)."""

    # On subcommands the defaults are suppressed, so a value given before the
    # command is not overwritten by the subcommand's default.
    def d(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("common options")
    group.add_argument(
        "--json", action="store_true", default=d(False), help="machine-readable output"
    )
    group.add_argument(
        "--bus",
        choices=("system", "session"),
        default=d(None),
        help=f"the bus bouheki serves on (default: system, or ${ENV_BUS_ADDRESS})",
    )
    group.add_argument(
        "--address", metavar="ADDRESS", default=d(None), help="a D-Bus address, e.g. unix:path=…"
    )
    group.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=d(DEFAULT_TIMEOUT),
        help=f"how long to wait for a reply (default {DEFAULT_TIMEOUT:g})",
    )


def _tree_options(parser: argparse.ArgumentParser) -> None:
    """Which files a local command reads (check-config, explain --offline)."""
    parser.add_argument(
        "--root",
        metavar="DIR",
        help="read the tree below DIR as if it were / (DIR/etc/bouheki/bouheki.toml and the "
        "units/ of DIR/usr/lib/bouheki, DIR/run/bouheki, DIR/etc/bouheki): a CI job's checkout",
    )
    parser.add_argument(
        "--units-dir",
        metavar="DIR",
        action="append",
        help="search DIR for units/ instead of the standard directories, as `bouheki "
        "--units-dir` does (repeatable; later ones take precedence)",
    )


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=formatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_: str, epilog: Optional[str] = None) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, help=help_, description=help_, epilog=epilog, formatter_class=formatter
        )
        _common(p, suppress=True)
        return p

    command("status", "show the daemon's version, policy generation and counters")
    command("reload", "re-read and apply the configuration atomically (root)")
    command("policies", "list the running policies, their units, modes and files")
    stats = command("stats", "show global, per-policy and per-rule counters", STATS_EPILOG)
    stats.add_argument(
        "--format",
        choices=("table", "openmetrics", "prometheus"),
        default="table",
        help="table (default; --json for JSON), or metrics in the OpenMetrics or Prometheus "
        "text format",
    )
    stats.add_argument(
        "--output",
        metavar="FILE",
        help="with a metrics format: replace FILE atomically instead of printing (for "
        "node_exporter's textfile collector); written even when the daemon does not answer",
    )

    explain = command(
        "explain",
        "say which rule would decide a connection, and where it is written",
        EXPLAIN_EPILOG,
    )
    explain.add_argument("--unit", metavar="UNIT", help="the process's systemd unit")
    explain.add_argument("--comm", metavar="COMM", default="", help="the process name (comm)")
    explain.add_argument("--exe", metavar="PATH", help="the executable's path")
    explain.add_argument("--uid", metavar="N", type=_uint, default=0, help="uid (default 0)")
    explain.add_argument(
        "--gid", metavar="N", type=_uint, default=0, help="primary gid (default 0)"
    )
    explain.add_argument(
        "--to",
        metavar="ADDR[:PORT]",
        type=parse_destination,
        required=True,
        help="destination: 10.0.0.1:443, [2001:db8::1]:53, or an address alone",
    )
    explain.add_argument(
        "--proto", choices=("tcp", "udp"), default="tcp", help="protocol (default tcp)"
    )
    explain.add_argument(
        "--offline",
        action="store_true",
        help="answer from the files, without the daemon, as it would answer once they are "
        "loaded (the unit placed where systemd would put it)",
    )
    _tree_options(explain)

    check = command(
        "check-config",
        "validate a configuration without applying it (no daemon needed)",
        CHECK_EPILOG,
    )
    check.add_argument(
        "path",
        metavar="PATH",
        nargs="?",
        help="the main configuration file, TOML or legacy YAML (default: bouheki.toml "
        "in the search paths); unit policies come from the search paths",
    )
    check.add_argument(
        "--daemon",
        action="store_true",
        help="ask the running daemon instead (its view and search paths; a PATH needs root)",
    )
    _tree_options(check)

    learned = command(
        "learned",
        "show what a learning policy (learn = true) saw a unit connect to (root)",
        LEARN_EPILOG,
    )
    learned.add_argument("unit", metavar="UNIT", help="the unit, e.g. nginx.service")
    suggest = command(
        "suggest",
        "print a unit policy that allows exactly what was learned (root)",
        LEARN_EPILOG,
    )
    suggest.add_argument("unit", metavar="UNIT", help="the unit, e.g. nginx.service")
    for version, bits in ((4, 32), (6, 128)):
        suggest.add_argument(
            f"--ipv{version}-prefix",
            metavar="N",
            type=_prefix(bits),
            default=bits,
            help=f"allow the /N network around each IPv{version} address seen (default "
            f"{bits}: the address itself)",
        )
    suggest.add_argument(
        "--output", metavar="FILE", help="write the policy to FILE (replaced atomically)"
    )
    forget = command("forget", "drop what the policy judging a unit learned (root)", LEARN_EPILOG)
    forget.add_argument("unit", metavar="UNIT", help="the unit, e.g. nginx.service")

    monitor = command("monitor", "follow blocked connections live", MONITOR_EPILOG)
    monitor.add_argument(
        "--count", metavar="N", type=_uint, default=0, help="exit after N Blocked events"
    )
    return parser
