"""The engine contract: what the daemon's engine offers the D-Bus adapter and bouhekictl.

The bus adapter (bouheki.bus) only translates between D-Bus and this module, and
bouhekictl's local `check-config` returns the same CheckResult, so everything
here uses plain types (str, int, bool, lists, frozen dataclasses): no policy
objects, no kernel handles, no D-Bus types. Field names are API: they are the
keys of the D-Bus dictionaries and of `bouhekictl --json`, so renaming one is
an incompatible change (see doc/org.bouheki.Bouheki1.5.md).

Conventions:
- Times are CLOCK_REALTIME microseconds since the epoch (`*_usec`), 0 = never.
- Counters are monotonic since the daemon started (not reset by a reload).
- A rule index is the position in the policy's lowered, ordered rule list;
  NO_RULE when the policy default (or no policy) decided. The engine converts
  the kernel's DEFAULT_RULE to NO_RULE.
- Every method is called on the daemon's asyncio loop thread, and listeners
  are called there too: an engine whose events come from another thread must
  hand them over with loop.call_soon_threadsafe().
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Callable, Literal, Optional, Protocol, Union

Verdict = Literal["allowed", "blocked", "would-block", "ignored"]
EventVerdict = Literal["blocked", "would-block"]
L4Protocol = Literal["tcp", "udp"]
Mode = Literal["block", "monitor"]

NO_RULE = -1


@dataclass(frozen=True)
class Problem:
    """One configuration error, located so an editor can jump to it."""

    file: str
    line: int  # 1-based; 0 when the problem concerns the whole file
    message: str

    def __iter__(self) -> Iterator[Union[str, int]]:
        """Taken apart as (file, line, message) where a tuple is expected."""
        return iter((self.file, self.line, self.message))

    def __str__(self) -> str:
        # The compiler convention (file:line: message) that editors and
        # `grep -n`-trained eyes understand; file-level problems drop the line.
        if not self.file:
            return self.message
        if self.line > 0:
            return f"{self.file}:{self.line}: {self.message}"
        return f"{self.file}: {self.message}"


class EngineError(Exception):
    """An operation failed for a reason the caller should read (a readable message)."""


class ConfigInvalid(EngineError):
    """The configuration has errors; the running policy was kept.

    Raised by reload() (and allowed from the config loader's check_config,
    which bouhekictl turns into a CheckResult).
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"configuration invalid ({count} {noun})")


class BadRequest(EngineError, ValueError):
    """The request itself is malformed (bad address, port out of range, ...)."""


@dataclass(frozen=True)
class ReloadResult:
    generation: int  # the policy generation now active
    policies: int  # number of policies in it
    warnings: list[str] = field(default_factory=list)
    duration_ms: int = 0


@dataclass(frozen=True)
class NameAddress:
    address: str
    expires_usec: int  # when the resolved address's TTL runs out


@dataclass(frozen=True)
class NameState:
    """A domain name used by a policy and what it currently resolves to."""

    name: str
    addresses: list[NameAddress] = field(default_factory=list)


@dataclass(frozen=True)
class PolicySummary:
    name: str
    units: list[str]  # unit names and shell-style patterns the policy covers
    mode: str  # Mode
    rule_count: int  # lowered rules, at most 64
    files: list[str]  # the file and its drop-ins, in the order applied
    cgroups: int  # cgroups currently mapped to this policy
    names: list[NameState] = field(default_factory=list)


@dataclass(frozen=True)
class RuleCounters:
    index: int
    origin: str  # "file:line" of the rule, or "" for a pseudo-rule of the simple form
    hits: int
    blocked: int
    would_block: int


@dataclass(frozen=True)
class PolicyCounters:
    name: str
    hits: int
    blocked: int
    would_block: int
    rules: list[RuleCounters] = field(default_factory=list)


@dataclass(frozen=True)
class UnitCounters:
    """Blocked (or, in monitor mode, would-be-blocked) calls of one unit, as
    the events read from the kernel tell; unit "" gathers the processes in
    no unit and, past MAX_UNIT_COUNTERS units, the rest."""

    unit: str
    blocked: int
    would_block: int


@dataclass(frozen=True)
class Statistics:
    checks: int  # connects and sends judged by the BPF programs
    allowed: int
    blocked: int
    would_block: int
    events: int  # events read from the ring buffer
    events_lost: int  # ring buffer reservations that failed
    events_suppressed: int  # events not logged because of the journal rate limit
    policies: list[PolicyCounters] = field(default_factory=list)
    units: list[UnitCounters] = field(default_factory=list)
    generation: int = 0
    reloads: int = 0  # applied since the daemon started (its start included)
    reloads_failed: int = 0
    last_reload_usec: int = 0  # CLOCK_REALTIME of the last attempt, 0 if none
    last_reload_ok: bool = True
    names_resolved: int = 0  # domain names of the running policies with addresses
    names_unresolved: int = 0  # ... and without any


@dataclass(frozen=True)
class ExplainQuery:
    """A connection to judge with the Python twin of the kernel classifier."""

    address: str  # IPv4 or IPv6 destination as typed by the user
    port: Optional[int] = None  # None: not given; the engine decides (see explain())
    protocol: str = "tcp"  # L4Protocol
    unit: Optional[str] = None  # None: a process outside every unit (the [host] policy)
    comm: str = ""
    exe: Optional[str] = None
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Explanation:
    verdict: str  # Verdict
    policy: str  # the policy that applied, "" when none does
    rule: int  # deciding rule index, NO_RULE when the policy default decided
    origin_file: str
    origin_line: int  # 0 when unknown
    origin_text: str  # the source line(s) of the deciding rule or list entry
    reason: str  # one sentence: why this verdict


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    policies: int = 0


@dataclass(frozen=True)
class Observation:
    """What a learning policy (learn = true) saw: connections to one
    destination, protocol and port by one uid and executable."""

    address: str  # the destination as judged (an IPv4-mapped address as IPv4)
    port: int  # 0 for protocols without ports
    protocol: str  # a rule's protocol name (tcp, udp, icmp, raw...)
    uid: int
    exe: str  # the executable's path, "" when it cannot be found
    names: list[str]  # domain names of the policy that resolve to address now
    allowed: int
    would_block: int
    blocked: int
    first_usec: int
    last_usec: int


@dataclass(frozen=True)
class Learned:
    """What the policy of a unit has learned so far (see `bouhekictl suggest`)."""

    unit: str
    policy: str  # the policy that judges the unit, "" when none does
    learning: bool  # that policy has learn = true
    observations: list[Observation] = field(default_factory=list)
    # Connections of learning policies (any of them) that the full learned
    # map could not record since the programs were loaded.
    missed: int = 0
    capacity: int = 0  # entries the learned map holds, for all policies


@dataclass(frozen=True)
class Status:
    """The daemon's headline state; each field is a D-Bus property (see bus/names.py)."""

    version: str
    generation: int
    loaded_at_usec: int
    mode_summary: str  # e.g. "3 policies: 2 block, 1 monitor"
    blocked: int
    would_block: int


# Status field names, for EngineListener.on_properties_changed().
STATUS_FIELDS: tuple[str, ...] = (
    "version",
    "generation",
    "loaded_at_usec",
    "mode_summary",
    "blocked",
    "would_block",
)


@dataclass(frozen=True)
class ConnectionEvent:
    """One judged connection, as the journal records it (doc/EVENTS.md) and,
    when blocked or would-be-blocked, as the Blocked signal carries it (the
    signal's keys are those of bus/wire.py's spec, a subset of these)."""

    unit: str  # "" when the process is in no unit (host policy)
    policy: str
    verdict: str  # "blocked", "would-block"; "allowed" in the journal only (log_allowed)
    daddr: str
    dport: int
    protocol: str  # a rule's protocol name
    comm: str
    exe: str  # "" when it cannot be known reliably (service/exe_paths.py)
    pid: int
    uid: int
    gid: int
    rule: int  # NO_RULE when the policy default decided or the call was refused
    origin: str  # "file:line" of the deciding rule, "" if none
    timestamp_usec: int
    # The executable's identity as the kernel read it: always known.
    exe_dev: int = 0
    exe_ino: int = 0
    cgroup_id: int = 0
    hook: str = "connect"
    # "policy" when the rules decided, else why the call was refused whatever
    # they say (REASON_WORDS: address-form, routing-option, sctp-not-named...).
    reason: str = "policy"


class EngineListener(Protocol):
    """Receives the engine's notifications (on the loop thread; must not block)."""

    def on_reloaded(self, generation: int) -> None: ...

    def on_blocked(self, event: ConnectionEvent) -> None: ...

    def on_properties_changed(self, names: Sequence[str]) -> None:
        """`names` are STATUS_FIELDS entries whose values changed."""
        ...


Unsubscribe = Callable[[], None]


class Engine(Protocol):
    """What the daemon implements and hands to bouheki.bus.serve()."""

    async def reload(self) -> ReloadResult:
        """Re-read and apply the configuration atomically.

        Raises ConfigInvalid (running policy kept) or EngineError. Must call
        on_reloaded() and on_properties_changed() of the listeners on success.
        """
        ...

    def list_policies(self) -> list[PolicySummary]: ...

    def statistics(self) -> Statistics: ...

    def explain(self, query: ExplainQuery) -> Explanation:
        """Judge `query` against the running policy. Raises BadRequest on bad input.

        When query.port is None the engine may judge with port-constrained rules
        treated as not matching (and say so in `reason`) or raise BadRequest.
        """
        ...

    async def check_config(self, path: Optional[str]) -> CheckResult:
        """Validate the configuration at `path` (None: the daemon's own) without applying it.
        Async: a large configuration takes seconds to parse."""
        ...

    def status(self) -> Status: ...

    async def learned(self, unit: str) -> Learned:
        """What the policy judging `unit` learned. Raises BadRequest for a
        name that is not a unit's. Async: reading a full map takes seconds,
        which must not stall the daemon's loop."""
        ...

    async def forget_learned(self, unit: str) -> int:
        """Drop what the policy judging `unit` learned; how many entries."""
        ...

    def subscribe(self, listener: EngineListener) -> Unsubscribe: ...
