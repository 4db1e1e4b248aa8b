"""The policy model, in two layers.

PolicySpec is what a policy file says, every value carrying the file and line
it came from. LoweredPolicy is the ordered list of rules it means (doc/DESIGN.md
section 2.1), with names, address sets and executables already resolved: the
compiler turns it into tables, and reference.py evaluates it rule by rule.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, Optional, TypeVar, Union

from bouheki.policy.tables import Action, Origin

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
ExeId = tuple[int, int]  # (kernel dev_t, inode)

T = TypeVar("T")


@dataclass(frozen=True)
class DomainName:
    """A name to resolve; normalized to lower case without the final dot."""

    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class AddressSet:
    """A named, daemon-maintained set of networks such as @lan."""

    name: str  # without the '@'

    def __str__(self) -> str:
        return "@" + self.name


class Net(NamedTuple):
    """An IP network as the policy model holds it: its version, its address
    as an int (no host bits) and its prefix length. An ipaddress network
    takes ~430 bytes and, built from a string, most of a list's parse: a
    policy may list 100,000 (bench/ section 2). `addr in net`, str() and
    the ipaddress network (network()) are as ipaddress gives them."""

    version: int
    value: int
    prefixlen: int

    @property
    def max_prefixlen(self) -> int:
        return 32 if self.version == 4 else 128

    @staticmethod
    def of(net: IPNetwork) -> Net:
        return Net(net.version, int(net.network_address), net.prefixlen)

    def network(self) -> IPNetwork:
        if self.version == 4:
            return ipaddress.IPv4Network((self.value, self.prefixlen))
        return ipaddress.IPv6Network((self.value, self.prefixlen))

    def __contains__(self, addr: object) -> bool:
        if not isinstance(addr, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            return False
        shift = self.max_prefixlen - self.prefixlen
        return addr.version == self.version and int(addr) >> shift == self.value >> shift

    def __str__(self) -> str:
        return str(self.network())


Dest = Union[Net, DomainName, AddressSet]

# ::ffff:0:0/96, as Net.value >> 32
_MAPPED_TOP = 0xFFFF


def fold_mapped(net: IPNetwork | Net) -> Net:
    """A network as the model holds it; an IPv4-mapped IPv6 network as the
    IPv4 network it stands for.

    The hooks judge a connect to ::ffff:a.b.c.d as IPv4, so a policy entry
    written in mapped form must land in the IPv4 table to ever match.
    """
    if not isinstance(net, Net):
        net = Net.of(net)
    if net.version == 6 and net.prefixlen >= 96 and net.value >> 32 == _MAPPED_TOP:
        return Net(4, net.value & 0xFFFFFFFF, net.prefixlen - 96)
    return net


def unmap(addr: IPAddress) -> IPAddress:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


# ---------------------------------------------------------------------------
# What a file says


@dataclass(frozen=True)
class Item(Generic[T]):
    value: T
    origin: Origin  # text: the value's path in the file, e.g. 'network.deny[1]'


@dataclass(frozen=True)
class ListField(Generic[T]):
    items: tuple[Item[T], ...] = ()
    # The key that introduced the list (the first file to give it items):
    # the origin of the pseudo-rule the list lowers to.
    origin: Optional[Origin] = None

    def __bool__(self) -> bool:
        return bool(self.items)

    def values(self) -> list[T]:
        return [item.value for item in self.items]

    def extended(self, other: ListField[T]) -> ListField[T]:
        origin = self.origin if self.items or not other.items else other.origin
        return ListField(self.items + other.items, origin or other.origin)


@dataclass(frozen=True)
class AllowDeny(Generic[T]):
    allow: ListField[T] = field(default_factory=ListField)
    deny: ListField[T] = field(default_factory=ListField)

    def extended(self, other: AllowDeny[T]) -> AllowDeny[T]:
        return AllowDeny(self.allow.extended(other.allow), self.deny.extended(other.deny))


@dataclass(frozen=True)
class RuleSpec:
    """One [[rule]] entry. None: the rule does not constrain that dimension."""

    action: Action
    origin: Origin
    to: Optional[tuple[Item[Dest], ...]] = None
    ports: Optional[tuple[tuple[int, int], ...]] = None  # inclusive ranges
    protocol: Optional[int] = None  # Proto value; None: any ("any", or no key)
    command: Optional[tuple[Item[bytes], ...]] = None
    exe: Optional[tuple[Item[str], ...]] = None
    uid: Optional[tuple[Item[int], ...]] = None
    gid: Optional[tuple[Item[int], ...]] = None


IDENTITY_DIMENSIONS = ("command", "exe", "uid", "gid")


@dataclass(frozen=True)
class PolicySpec:
    origin: Origin  # the file (line 1), or the [host] table
    mode: Optional[Item[str]] = None  # 'block' | 'monitor'; None: block
    # Record what the scope connects to, for `bouhekictl suggest`.
    learn: Optional[Item[bool]] = None
    network: AllowDeny[Dest] = field(default_factory=AllowDeny)
    command: AllowDeny[bytes] = field(default_factory=AllowDeny)
    exe: AllowDeny[str] = field(default_factory=AllowDeny)
    uid: AllowDeny[int] = field(default_factory=AllowDeny)
    gid: AllowDeny[int] = field(default_factory=AllowDeny)
    rules: tuple[RuleSpec, ...] = ()

    @property
    def monitor(self) -> bool:
        return self.mode is not None and self.mode.value == "monitor"

    @property
    def learning(self) -> bool:
        return self.learn is not None and self.learn.value

    def identity(self, dimension: str) -> AllowDeny:
        lists: AllowDeny = getattr(self, dimension)
        return lists

    def merged(self, dropin: PolicySpec) -> PolicySpec:
        """This policy with a drop-in applied: lists extend, scalars override."""
        return PolicySpec(
            origin=self.origin,
            mode=dropin.mode if dropin.mode is not None else self.mode,
            learn=dropin.learn if dropin.learn is not None else self.learn,
            network=self.network.extended(dropin.network),
            command=self.command.extended(dropin.command),
            exe=self.exe.extended(dropin.exe),
            uid=self.uid.extended(dropin.uid),
            gid=self.gid.extended(dropin.gid),
            rules=self.rules + dropin.rules,
        )


# ---------------------------------------------------------------------------
# What it means: ordered rules, first match wins


@dataclass(frozen=True)
class LpmSet:
    """A set of addresses given by (network, included) entries: an address is
    in the set iff the longest entry containing it is included."""

    entries: tuple[tuple[Net, bool], ...]

    def contains(self, addr: IPAddress) -> bool:
        best: Optional[tuple[Net, bool]] = None
        for net, included in self.entries:
            contains = net.version == addr.version and addr in net
            if contains and (best is None or net.prefixlen > best[0].prefixlen):
                best = (net, included)
        return best is not None and best[1]


@dataclass(frozen=True)
class PortMatch:
    protos: frozenset[int]
    ranges: Optional[tuple[tuple[int, int], ...]] = None  # None: any port

    def matches(self, proto: int, port: int) -> bool:
        if proto not in self.protos:
            return False
        return self.ranges is None or any(lo <= port <= hi for lo, hi in self.ranges)


@dataclass(frozen=True)
class IdMatch(Generic[T]):
    """'value in set', or with negated 'value not in set'."""

    values: frozenset[T]
    negated: bool = False

    def matches(self, value: Optional[T]) -> bool:
        return (value in self.values) != self.negated


@dataclass(frozen=True)
class Rule:
    action: Action
    origin: Origin
    dst: Optional[LpmSet] = None
    port: Optional[PortMatch] = None
    comm: Optional[IdMatch[bytes]] = None
    exe: Optional[IdMatch[ExeId]] = None
    uid: Optional[IdMatch[int]] = None
    gid: Optional[IdMatch[int]] = None

    def matches(
        self,
        addr: IPAddress,
        proto: int,
        port: int,
        comm: bytes,
        exe: Optional[ExeId],
        uid: int,
        gid: int,
    ) -> bool:
        return (
            (self.dst is None or self.dst.contains(addr))
            and (self.port is None or self.port.matches(proto, port))
            and (self.comm is None or self.comm.matches(comm))
            and (self.exe is None or self.exe.matches(exe))
            and (self.uid is None or self.uid.matches(uid))
            and (self.gid is None or self.gid.matches(gid))
        )


@dataclass(frozen=True)
class LoweredPolicy:
    rules: tuple[Rule, ...]
    default_action: Action
    default_origin: Origin
    monitor: bool = False
    learn: bool = False
    # A rule names SCTP: only then may SCTP sockets exist in the scope (the
    # paths a peer advertises never pass a socket hook).
    names_sctp: bool = False
