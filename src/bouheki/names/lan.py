"""@lan: the connected subnets of the host's interfaces, followed live.

The watcher does not interpret the netlink address events: any event (or a
lost one, ENOBUFS) only says "look again", and the caller dumps the current
addresses. A full dump is cheap and cannot drift from the kernel's view the
way an incrementally patched copy could.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
from typing import Any, Callable, Optional

from .cache import IPNetwork

log = logging.getLogger("bouheki.names")


def connected_subnets() -> list[IPNetwork]:
    """The subnet of every address of every interface, loopback networks
    excepted (those are @loopback)."""
    from pyroute2 import IPRoute

    nets: set[IPNetwork] = set()
    with IPRoute() as ipr:
        for msg in ipr.get_addr():
            # IFA_ADDRESS: on a point-to-point link the peer, whose prefix is
            # the connected route; elsewhere the local address.
            addr = msg.get_attr("IFA_ADDRESS") or msg.get_attr("IFA_LOCAL")
            if addr is None:
                continue
            net = ipaddress.ip_network(f"{addr.split('%')[0]}/{msg['prefixlen']}", strict=False)
            if not net.is_loopback:
                nets.add(net)
    return sorted(nets, key=lambda n: (n.version, n))


class AddressWatcher:
    """Calls `on_change()` on the loop thread whenever an IPv4 or IPv6
    address is added to or removed from any interface."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self.on_change = on_change
        self._ipr: Any = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        from pyroute2 import IPRoute
        from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR

        ipr = IPRoute()
        try:
            ipr.bind(groups=RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)
            loop.add_reader(ipr.fileno(), self._readable)
        except BaseException:
            ipr.close()
            raise
        self._ipr, self._loop = ipr, loop

    def _readable(self) -> None:
        # Drain everything queued: one dump answers a burst of events.
        events = 0
        while True:
            try:
                self._ipr.recvfrom(65536, socket.MSG_DONTWAIT)
                events += 1
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    # Events were lost: a dump is exactly what catches up.
                    events += 1
                    continue
                log.error("address events: %s; @lan is no longer followed live", e)
                self.close()
                return
        if events:
            self.on_change()

    def close(self) -> None:
        if self._ipr is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._ipr.fileno())
        self._ipr.close()
        self._ipr = None
