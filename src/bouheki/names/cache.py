"""The addresses of the domain names the policies use, with their lifetimes.

Pure bookkeeping: no sockets, no clock of its own. Every method takes `now`
(seconds on a monotonic clock chosen by the caller), so the rules below are
tested with a fake clock:

- An answer's TTL is clamped to [min_ttl, max_ttl] (and never below
  MIN_INTERVAL, so a TTL of 0 cannot make the daemon query in a loop).
- Each address expires at the time it was last seen plus its clamped TTL; a
  re-seen address keeps the later of its old and new expiry (a client may
  still hold the older, longer answer).
- An address that is not seen again stays in force for `grace` seconds after
  it expired (connections that resolved it just before the record changed),
  then is removed.
- A name is re-resolved when the shortest TTL of its last answer runs out;
  after a failure, sooner (with backoff), and its addresses are kept until
  they expire as above: a resolver outage does not empty a policy at once.
- At most `max_addresses` per name: what does not fit is logged as an error,
  never dropped silently.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

from ..common.api import NameAddress, NameState

log = logging.getLogger("bouheki.names")

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

# Seconds. The shortest interval between two resolutions of one name.
MIN_INTERVAL = 1.0
# Retry a failed resolution after 1, 2, 4 ... seconds, at most this long.
RETRY_MAX = 60.0


def address_key(a: IPAddress) -> tuple[int, IPAddress]:
    """IPv4 before IPv6, then numeric: the order "the first N" refers to."""
    return (a.version, a)


@dataclass(frozen=True)
class Limits:
    """The [daemon] settings that govern names (see config/settings.py)."""

    min_ttl: float = 30
    max_ttl: float = 3600
    grace: float = 300
    max_addresses: int = 64

    def clamp(self, ttl: float) -> float:
        return max(MIN_INTERVAL, self.min_ttl, min(self.max_ttl, ttl))


@dataclass
class _Entry:
    # address -> when its (clamped) TTL runs out; removed `grace` seconds later.
    addresses: dict[IPAddress, float] = field(default_factory=dict)
    refresh_at: float = 0.0  # 0: resolve as soon as possible
    failures: int = 0  # consecutive failed resolutions
    last_error: str = ""
    resolved: bool = False  # at least one answer (possibly empty) was observed
    refused: frozenset[IPAddress] = frozenset()  # what the cap kept out, last time


class NameCache:
    def __init__(self, limits: Optional[Limits] = None) -> None:
        self.limits = limits or Limits()
        self._entries: dict[str, _Entry] = {}

    # -- what is known ---------------------------------------------------------

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def addresses(self, name: str) -> dict[IPAddress, float]:
        """address -> TTL expiry, for `name` (empty if unknown)."""
        e = self._entries.get(name)
        return dict(e.addresses) if e else {}

    def needs_answer(self, name: str) -> bool:
        """Never answered, or holds no address: worth resolving right away
        (at a reload) rather than waiting for its next deadline."""
        e = self._entries.get(name)
        return e is None or not e.resolved or not e.addresses

    def failures(self, name: str) -> int:
        e = self._entries.get(name)
        return e.failures if e else 0

    # -- updates ---------------------------------------------------------------

    def add(self, name: str) -> None:
        """Track `name` (due for resolution at once) if it is not tracked yet."""
        self._entries.setdefault(name, _Entry())

    def retain(self, names: Iterable[str]) -> None:
        """Forget every name but these (the policies no longer use the rest)."""
        keep = set(names)
        for name in [n for n in self._entries if n not in keep]:
            del self._entries[name]

    def observe(
        self,
        name: str,
        records: Iterable[tuple[IPAddress, float]],
        now: float,
        negative_ttl: float = 0,
    ) -> bool:
        """Record an answer: (address, TTL) pairs, CNAMEs already followed.
        An empty answer (NXDOMAIN, no A/AAAA) is an answer too; its
        `negative_ttl` says when to ask again. Nothing is removed here:
        addresses that left the answer expire on their own (see expire()).
        True when the set of addresses changed."""
        e = self._entries.setdefault(name, _Entry())
        ttl_of: dict[IPAddress, float] = {}
        for addr, ttl in records:
            t = self.limits.clamp(ttl)
            ttl_of[addr] = min(ttl_of.get(addr, math.inf), t)
        before = set(e.addresses)
        cap = self.limits.max_addresses
        ordered = sorted(ttl_of, key=address_key)
        accepted, refused = ordered[:cap], ordered[cap:]
        for addr in accepted:
            expiry = now + ttl_of[addr]
            e.addresses[addr] = max(e.addresses.get(addr, expiry), expiry)
        self._enforce_cap(name, e, set(accepted))
        refused_set = frozenset(refused)
        if refused_set and refused_set != e.refused:
            # Logged once per distinct overflow, not at every refresh.
            log.error(
                "%s resolves to %d addresses, more than max_addresses_per_name (%d): "
                "%d addresses were not added: %s",
                name, len(ordered), cap, len(refused), ", ".join(map(str, refused)),
            )  # fmt: skip
        e.refused = refused_set
        e.failures, e.last_error, e.resolved = 0, "", True
        interval = min(ttl_of.values()) if ttl_of else self.limits.clamp(negative_ttl)
        e.refresh_at = now + interval
        return set(e.addresses) != before

    def _enforce_cap(self, name: str, e: _Entry, fresh: set[IPAddress]) -> None:
        """The latest answer's addresses come first (clients use them now);
        stale ones still in their grace period fill what room is left, the
        longest-lived first. Evicting one early is logged as an error."""
        stale = [a for a in e.addresses if a not in fresh]
        room = self.limits.max_addresses - len(fresh)
        if len(stale) <= room:
            return
        stale.sort(key=lambda a: (-e.addresses[a], address_key(a)))
        evicted = stale[max(room, 0) :]
        for addr in evicted:
            del e.addresses[addr]
        log.error(
            "%s: max_addresses_per_name (%d) reached: %d earlier addresses were removed "
            "before their TTL and grace ran out, to make room for the current answer: %s",
            name, self.limits.max_addresses, len(evicted), ", ".join(map(str, evicted)),
        )  # fmt: skip

    def failed(self, name: str, now: float, error: str) -> bool:
        """A resolution failed: keep the addresses, retry sooner (backoff).
        True when this starts a failure streak or the error changed (worth a
        log line; repeats are not)."""
        e = self._entries.setdefault(name, _Entry())
        e.failures += 1
        retry = min(RETRY_MAX, MIN_INTERVAL * 2 ** min(e.failures - 1, 16))
        due = now + retry
        # A partial answer (A fine, AAAA timed out) has set a TTL deadline:
        # the retry comes first.
        e.refresh_at = min(e.refresh_at, due) if e.refresh_at > now else due
        news = e.failures == 1 or error != e.last_error
        e.last_error = error
        return news

    def expire(self, now: float) -> set[str]:
        """Remove the addresses whose TTL plus grace has passed. Returns the
        names whose addresses changed (empty: nothing did)."""
        changed: set[str] = set()
        for name, e in self._entries.items():
            gone = [a for a, exp in e.addresses.items() if exp + self.limits.grace <= now]
            for addr in gone:
                del e.addresses[addr]
            if gone:
                changed.add(name)
                log.info(
                    "%s: %s removed: not in its answers for its TTL and %gs of grace",
                    name, ", ".join(map(str, sorted(gone, key=address_key))), self.limits.grace,
                )  # fmt: skip
        return changed

    # -- schedule --------------------------------------------------------------

    def due(self, now: float) -> list[str]:
        """The names to resolve now."""
        return sorted(n for n, e in self._entries.items() if e.refresh_at <= now)

    def next_deadline(self) -> Optional[float]:
        """The next time something is due: a resolution or a removal."""
        times = [e.refresh_at for e in self._entries.values()]
        grace = self.limits.grace
        times += [exp + grace for e in self._entries.values() for exp in e.addresses.values()]
        return min(times) if times else None

    # -- views -----------------------------------------------------------------

    def networks(self) -> dict[str, list[IPNetwork]]:
        """name -> a host network per address: the Environment's names."""
        return {
            name: [ipaddress.ip_network(a) for a in sorted(e.addresses, key=address_key)]
            for name, e in self._entries.items()
        }

    def states(self, names: Iterable[str], to_usec: Callable[[float], int]) -> list[NameState]:
        """What bouhekictl shows. `to_usec` turns a time of this cache's clock
        into CLOCK_REALTIME microseconds. An address whose expiry is past is
        in its grace period."""
        out = []
        for name in sorted(set(names)):
            e = self._entries.get(name)
            items = sorted(e.addresses.items(), key=lambda kv: address_key(kv[0])) if e else []
            out.append(NameState(name, [NameAddress(str(a), to_usec(exp)) for a, exp in items]))
        return out
