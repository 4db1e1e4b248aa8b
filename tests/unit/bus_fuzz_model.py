"""What the two D-Bus fuzz suites share: names, the model of the answers, strategies.

Used by tests/unit/test_fuzz_bus.py (the adapter with a fake engine, on the
host) and tests/vm/guest/test_hostile_bus.py (the real daemon in the lab
guest, which puts this directory on sys.path). Each tunes the strategies to
its budget with wire(); no test_ prefix, so pytest does not collect this.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from bouheki.bus import names
from bouheki.dbuslib import Message, MessageFlag, SignatureTree, Variant

PEER = "org.freedesktop.DBus.Peer"
INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
DBUS_ERROR = "org.freedesktop.DBus.Error."
UNKNOWN_METHOD = DBUS_ERROR + "UnknownMethod"
UNKNOWN_OBJECT = DBUS_ERROR + "UnknownObject"
UNKNOWN_INTERFACE = DBUS_ERROR + "UnknownInterface"
UNKNOWN_PROPERTY = DBUS_ERROR + "UnknownProperty"
READ_ONLY = DBUS_ERROR + "PropertyReadOnly"
# What the library answers for members nobody implements; which one is its choice.
UNKNOWN = frozenset({UNKNOWN_METHOD, UNKNOWN_OBJECT, UNKNOWN_INTERFACE})

PROPERTY_NAMES = frozenset([*names.STATUS_PROPERTIES.values(), names.PROPERTY_SUPPRESSED_SIGNALS])
METHOD_SIGNATURES = {
    names.METHOD_RELOAD: ("", "a{sv}"),
    names.METHOD_LIST_POLICIES: ("", "aa{sv}"),
    names.METHOD_GET_STATISTICS: ("", "a{sv}"),
    names.METHOD_EXPLAIN: ("a{sv}", "a{sv}"),
    names.METHOD_CHECK_CONFIG: ("s", "a{sv}"),
    names.METHOD_LEARNED: ("s", "a{sv}"),
    names.METHOD_FORGET_LEARNED: ("s", "u"),
}
INT_RANGES = {
    "y": (0, 2**8 - 1),
    "n": (-(2**15), 2**15 - 1),
    "q": (0, 2**16 - 1),
    "i": (-(2**31), 2**31 - 1),
    "u": (0, 2**32 - 1),
    "x": (-(2**63), 2**63 - 1),
    "t": (0, 2**64 - 1),
}
BASIC = "ybnqiuxtdsog"  # no "h": the service's connection does not take file descriptors


def fuzz_settings(max_examples: int, *also_suppress: HealthCheck) -> settings:
    """Reproducible runs, no deadline, none of the health checks large messages trip."""
    return settings(
        derandomize=True,
        deadline=None,
        database=None,
        max_examples=max_examples,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
            *also_suppress,
        ],
    )


def message(
    path: str,
    interface: Optional[str],
    member: str,
    signature: str,
    body: list,
    flags: MessageFlag = MessageFlag.NONE,
) -> Message:
    """A call to the service, built by hand: any signature can be sent for any member."""
    return Message(
        destination=names.BUS_NAME,
        path=path,
        interface=interface,
        member=member,
        signature=signature,
        body=body,
        flags=flags,
    )


# --- what the interface should answer -------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """The answer a call should get, and what it may change in the engine."""

    reply: Optional[str] = None  # a method return with this signature...
    errors: frozenset[str] = frozenset()  # ...or an error with one of these names
    effect: str = ""  # "reload", "explain", "check": the engine was asked

    def outcomes(self) -> frozenset[str]:
        """The acceptable answers as "return:SIG" and error names."""
        returns = frozenset() if self.reply is None else frozenset({f"return:{self.reply}"})
        return returns | self.errors


def error(*error_names: str, effect: str = "") -> Expect:
    return Expect(errors=frozenset(error_names), effect=effect)


def expect(
    path: str,
    interface: Optional[str],
    member: str,
    signature: str,
    body: list,
    ours: Callable[[str, list], Expect],
) -> Expect:
    """The model: what the documented interface (and the library, for the rest) answers.

    `ours(member, body)` answers a call of one of our methods with its own
    signature: that depends on the engine behind the adapter.
    """
    if not interface:
        return error(UNKNOWN_METHOD)  # a call must name its interface, whatever the library
    if interface == names.PROPERTIES_INTERFACE:
        if {"Get": "ss", "GetAll": "s", "Set": "ssv"}.get(member) != signature:
            return error(UNKNOWN_METHOD)
        if path != names.OBJECT_PATH:
            return error(UNKNOWN_OBJECT)
        if body[0] != names.INTERFACE:
            return error(UNKNOWN_INTERFACE)
        if member == "GetAll":
            return Expect("a{sv}")
        if body[1] not in PROPERTY_NAMES:
            return error(UNKNOWN_PROPERTY)
        return error(READ_ONLY) if member == "Set" else Expect("v")
    if interface == PEER:
        known = {("Ping", ""): "", ("GetMachineId", ""): "s"}
        out = known.get((member, signature))
        return error(UNKNOWN_METHOD) if out is None else Expect(out)
    if interface == INTROSPECTABLE:
        return Expect("s") if (member, signature) == ("Introspect", "") else error(*UNKNOWN)
    if interface == OBJECT_MANAGER and member == "GetManagedObjects":
        return Expect("a{oa{sa{sv}}}")  # dbus-next answers it whatever the signature
    if interface != names.INTERFACE or path != names.OBJECT_PATH:
        return error(*UNKNOWN)
    if METHOD_SIGNATURES.get(member, (None,))[0] != signature:
        return error(*UNKNOWN)
    return ours(member, body)


# --- hostile values -------------------------------------------------------------------

CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)


def object_paths(max_parts: int, *also: str) -> st.SearchStrategy[str]:
    """Our object path, its neighbours, `also`, and any path of up to `max_parts` parts."""
    return st.one_of(
        st.sampled_from(
            ["/", names.OBJECT_PATH, names.OBJECT_PATH + "/Child", "/org/bouheki", *also]
        ),
        st.lists(st.from_regex(r"[A-Za-z0-9_]{1,12}", fullmatch=True), max_size=max_parts).map(
            lambda parts: "/" + "/".join(parts)
        ),
    )


def _short(signature: str) -> bool:
    return len(signature) < 256  # a signature's limit


def _fits(types: list[str]) -> bool:
    return _short("".join(types))


@dataclass(frozen=True)
class Wire:
    """Strategies for D-Bus types and values, as wire() tuned them."""

    # signatures(depth=0): one complete type, at most max_depth - depth containers deep.
    signatures: Callable[..., st.SearchStrategy[str]]
    # values_for(signature, depth=0): values dbus-next marshals as `signature`.
    values_for: Callable[..., st.SearchStrategy[Any]]
    # variants(depth=0): a Variant of any type, simpler the deeper it is nested.
    variants: Callable[..., st.SearchStrategy[Variant]]
    # bodies(): any signature of up to max_args arguments, and values for it.
    bodies: Callable[[], st.SearchStrategy[tuple[str, list[Any]]]]


def wire(
    *,
    text: st.SearchStrategy[str],
    paths: st.SearchStrategy[str],
    max_depth: int,
    max_fields: int,
    max_bytes: int,
    max_signatures: int,
    max_args: int,
    variants_follow_depth: bool,
) -> Wire:
    """Strategies for one suite.

    `text` and `paths` are the values of "s" and "o"; `max_depth` bounds the
    nesting of containers in a signature, and of variants in variants (else
    examples explode); `max_fields` a struct's fields, `max_bytes` an "ay",
    `max_signatures` the types in a "g". A variant nested `depth` deep holds a
    type of signatures(depth + 1) if `variants_follow_depth`, else of
    signatures(1) until max_depth.
    """

    @functools.cache
    def signatures(depth: int = 0) -> st.SearchStrategy[str]:
        basic = st.sampled_from(list(BASIC))
        if depth >= max_depth:
            return st.one_of(basic, st.just("v"))
        inner = st.deferred(lambda: signatures(depth + 1))
        return st.one_of(
            basic,
            st.just("v"),
            inner.map(lambda s: f"a{s}"),
            st.tuples(basic, inner).map(lambda kv: f"a{{{kv[0]}{kv[1]}}}"),
            st.lists(inner, min_size=1, max_size=max_fields).map(lambda ts: f"({''.join(ts)})"),
        )

    signature_values = st.lists(signatures(1), max_size=max_signatures).map("".join).filter(_short)

    @functools.cache
    def values_for(signature: str, depth: int = 0) -> st.SearchStrategy[Any]:
        return _values(SignatureTree(signature).types[0], depth)

    def _values(t: Any, depth: int) -> st.SearchStrategy[Any]:
        token = t.token
        if token in INT_RANGES:
            return st.integers(*INT_RANGES[token])
        simple = {
            "b": st.booleans(),
            "d": st.floats(),
            "s": text,
            "o": paths,
            "g": signature_values,
        }
        if token in simple:
            return simple[token]
        if token == "v":
            return variants(depth + 1)
        if token == "(":
            return st.tuples(*(_values(c, depth) for c in t.children)).map(list)
        child = t.children[0]
        if child.token == "{":
            key, value = child.children
            return st.dictionaries(_values(key, depth), _values(value, depth), max_size=3)
        if child.token == "y":
            return st.binary(max_size=max_bytes)
        return st.lists(_values(child, depth), max_size=3)

    @st.composite
    def variants(draw: st.DrawFn, depth: int = 0) -> Variant:
        if depth >= max_depth:
            types = st.sampled_from(list(BASIC))
        else:
            types = signatures(depth + 1 if variants_follow_depth else 1)
        signature = draw(types)
        return Variant(signature, draw(values_for(signature, depth)))

    # Made once: a strategy made inside a draw costs Hypothesis a parse of
    # this file for every lambda in it (it describes them by their source).
    body_types = st.lists(signatures(), max_size=max_args).filter(_fits)

    @st.composite
    def bodies(draw: st.DrawFn) -> tuple[str, list[Any]]:
        types = draw(body_types)
        return "".join(types), [draw(values_for(t)) for t in types]

    return Wire(signatures, values_for, variants, bodies)
