"""@resolvers: the name servers this host's resolver library asks.

Read from /etc/resolv.conf the way glibc's resolver reads it
(resolv/res_init.c, resolv_conf.c): "nameserver" lines, at most MAXNS (3) of
them, the rest ignored; an IPv6 address may carry a %zone, which the kernel
tables do not hold (dropped here: the address is what connect() names); and
no usable line at all means the server on this host (127.0.0.1, as glibc's
default). Read when a policy is loaded (reload to follow a change), not
watched: the file changes rarely and a reload is cheap.
"""

from __future__ import annotations

import ipaddress
import logging

from .cache import IPNetwork

log = logging.getLogger("bouheki.names")

RESOLV_CONF = "/etc/resolv.conf"
MAXNS = 3  # glibc's resolv.h: the servers past the third are never asked
DEFAULT = "127.0.0.1"  # glibc: no nameserver line, the local server


def parse(text: str) -> list[IPNetwork]:
    """The name servers of a resolv.conf text, as /32 and /128 networks."""
    out: list[IPNetwork] = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != "nameserver" or len(out) == MAXNS:
            continue
        try:
            addr = ipaddress.ip_address(words[1].split("%")[0])
        except ValueError:
            continue  # glibc skips an unparsable address too
        net = ipaddress.ip_network(addr)
        if net not in out:
            out.append(net)
    return out or [ipaddress.ip_network(DEFAULT)]


def name_servers(path: str = RESOLV_CONF) -> list[IPNetwork]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse(f.read())
    except OSError as e:
        # glibc then asks the local server too.
        log.warning("cannot read %s (%s): @resolvers is %s", path, e, DEFAULT)
        return [ipaddress.ip_network(DEFAULT)]
