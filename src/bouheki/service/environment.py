"""Resolve what a policy set needs from the outside world (executables,
domain names, address sets) into the compiler's immutable Environment."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable

from ..policy.env import Environment, Requirements
from ..policy.model import IPNetwork


def kernel_dev(st_dev: int) -> int:
    """The kernel's dev_t (major << 20 | minor), as the hooks read it from the
    superblock; stat() returns the userspace encoding."""
    return (os.major(st_dev) << 20) | os.minor(st_dev)


def exe_ids(paths: Iterable[str]) -> dict[str, tuple[int, int] | None]:
    out: dict[str, tuple[int, int] | None] = {}
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            out[p] = None
            continue
        out[p] = (kernel_dev(st.st_dev), st.st_ino)
    return out


def lan_networks() -> list[IPNetwork]:
    """The connected subnets of every interface but loopback."""
    from pyroute2 import IPRoute

    nets: list[IPNetwork] = []
    with IPRoute() as ipr:
        for msg in ipr.get_addr():
            addr = msg.get_attr("IFA_ADDRESS")
            if addr is None:
                continue
            net = ipaddress.ip_network(f"{addr}/{msg['prefixlen']}", strict=False)
            if net.is_loopback:
                continue
            nets.append(net)
    return sorted(set(nets), key=lambda n: (n.version, n))


def resolve_names(names: Iterable[str]) -> dict[str, list[IPNetwork]]:
    """A name that does not resolve contributes nothing (the compiler warns)."""
    out: dict[str, list[IPNetwork]] = {}
    for name in names:
        try:
            infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
        except OSError:
            continue
        out[name] = sorted(
            {ipaddress.ip_network(info[4][0].split("%")[0]) for info in infos},
            key=lambda n: (n.version, n),
        )
    return out


def build(req: Requirements) -> Environment:
    sets: dict[str, list[IPNetwork]] = {}
    if "lan" in req.sets:
        sets["lan"] = lan_networks()
    return Environment(names=resolve_names(req.names), sets=sets, exes=exe_ids(req.exes))
