"""ctypes mirrors of bpf/bouheki.h. tests/unit/test_layout.py compiles the
header with the host compiler and checks every size and offset against these."""

from __future__ import annotations

import ctypes as ct

from ..common.units import PATTERN_LEN, UNIT_NAME_LEN
from ..policy.inline import INLINE_KEYS, INLINE_SPANS
from ..policy.tables import COMM_LEN, MAX_POLICIES


class State(ct.Structure):
    _fields_ = [
        ("active_gen", ct.c_uint32),
        ("pending_gen", ct.c_uint32),
        ("host_mntns", ct.c_uint32),
        ("flags", ct.c_uint32),
    ]


class ScopeKey(ct.Structure):
    _fields_ = [("gen", ct.c_uint32), ("pad", ct.c_uint32), ("cgroup_id", ct.c_uint64)]


class ScopeVal(ct.Structure):
    _fields_ = [("policy", ct.c_uint32), ("flags", ct.c_uint32)]


class PortSpan(ct.Structure):
    _fields_ = [
        ("mask", ct.c_uint64),
        ("lo", ct.c_uint16),
        ("hi", ct.c_uint16),
        ("protos", ct.c_uint8),
        ("pad", ct.c_uint8 * 3),
    ]


class InlineKey(ct.Structure):
    _fields_ = [("a", ct.c_uint64), ("b", ct.c_uint64), ("mask", ct.c_uint64)]


class Policy(ct.Structure):
    _fields_ = [
        ("allow_bits", ct.c_uint64),
        ("valid_bits", ct.c_uint64),
        ("dst_default", ct.c_uint64),
        ("port_default", ct.c_uint64),
        ("comm_default", ct.c_uint64),
        ("exe_default", ct.c_uint64),
        ("uid_default", ct.c_uint64),
        ("gid_default", ct.c_uint64),
        ("dst_varies", ct.c_uint64),
        ("port_varies", ct.c_uint64),
        ("comm_varies", ct.c_uint64),
        ("exe_varies", ct.c_uint64),
        ("uid_varies", ct.c_uint64),
        ("gid_varies", ct.c_uint64),
        ("flags", ct.c_uint32),
        ("default_action", ct.c_uint32),
        ("gen", ct.c_uint32),
        ("in_maps", ct.c_uint32),
        ("id", ct.c_uint32),
        ("n_spans", ct.c_uint8),
        ("uid_end", ct.c_uint8),
        ("gid_end", ct.c_uint8),
        ("comm_end", ct.c_uint8),
        ("exe_end", ct.c_uint8),
        ("filter4", ct.c_uint8),
        ("pad", ct.c_uint8 * 6),
        ("spans", PortSpan * INLINE_SPANS),
        ("keys", InlineKey * INLINE_KEYS),
    ]


def policy_slot(gen: int, policy_id: int) -> int:
    """bh_policy_slot: policy_id's slot in the policies array for generation
    gen, one half of the array per parity."""
    return (gen & 1) * MAX_POLICIES + policy_id


class PolicySlot(ct.Structure):
    """The policies array's key (an int), as a structure like every other key."""

    _fields_ = [("slot", ct.c_uint32)]


# The filters in front of the IPv4 destination trie (bh_filter_page).
FILTERS = 4
FILTER_BLOCK_BITS = 22
FILTER_PAGE_WORDS = 512
FILTER_PAGES = 128


class FilterPage(ct.Structure):
    _fields_ = [("w", ct.c_uint64 * FILTER_PAGE_WORDS)]


class FilterPageSlot(ct.Structure):
    """The filters array's key (an int)."""

    _fields_ = [("index", ct.c_uint32)]


def filter_page(gen: int, filter4: int, addr: int) -> int:
    """bh_filter_page: the page of filter4 (1..FILTERS) of gen's parity
    that holds the block of addr (an IPv4 address as an int)."""
    return ((gen & 1) * FILTERS + filter4 - 1) * FILTER_PAGES + (addr >> 25)


class Dst4Key(ct.Structure):
    _fields_ = [
        ("prefixlen", ct.c_uint32),
        ("gen", ct.c_uint32),
        ("policy", ct.c_uint32),
        ("addr", ct.c_uint8 * 4),
    ]


class Dst6Key(ct.Structure):
    _fields_ = [
        ("prefixlen", ct.c_uint32),
        ("gen", ct.c_uint32),
        ("policy", ct.c_uint32),
        ("addr", ct.c_uint8 * 16),
    ]


class PortKey(ct.Structure):
    _fields_ = [
        ("prefixlen", ct.c_uint32),
        ("gen", ct.c_uint32),
        ("policy", ct.c_uint32),
        ("proto", ct.c_uint8),
        ("port", ct.c_uint8 * 2),
        ("pad", ct.c_uint8),
    ]


class CommKey(ct.Structure):
    _fields_ = [("gen", ct.c_uint32), ("policy", ct.c_uint32), ("comm", ct.c_char * COMM_LEN)]


class ExeKey(ct.Structure):
    _fields_ = [
        ("gen", ct.c_uint32),
        ("policy", ct.c_uint32),
        ("ino", ct.c_uint64),
        ("dev", ct.c_uint32),
        ("pad", ct.c_uint32),
    ]


class IdKey(ct.Structure):
    _fields_ = [
        ("gen", ct.c_uint32),
        ("policy", ct.c_uint32),
        ("id", ct.c_uint32),
        ("pad", ct.c_uint32),
    ]


MAX_PATTERNS = 16


class UnitKey(ct.Structure):
    _fields_ = [
        ("gen", ct.c_uint32),
        ("pad", ct.c_uint32),
        ("parent_id", ct.c_uint64),
        ("name", ct.c_char * UNIT_NAME_LEN),
    ]


class Pattern(ct.Structure):
    _fields_ = [
        ("gen", ct.c_uint32),
        ("policy", ct.c_uint32),
        ("parent_id", ct.c_uint64),
        ("prefix_len", ct.c_uint32),
        ("suffix_len", ct.c_uint32),
        ("prefix", ct.c_char * PATTERN_LEN),
        ("suffix", ct.c_char * PATTERN_LEN),
    ]


class Counter(ct.Structure):
    _fields_ = [("hits", ct.c_uint64), ("blocked", ct.c_uint64), ("would_block", ct.c_uint64)]


class Event(ct.Structure):
    _fields_ = [
        ("ts_ns", ct.c_uint64),
        ("cgroup_id", ct.c_uint64),
        ("exe_ino", ct.c_uint64),
        ("exe_dev", ct.c_uint32),
        ("pid", ct.c_uint32),
        ("tid", ct.c_uint32),
        ("uid", ct.c_uint32),
        ("gid", ct.c_uint32),
        ("policy", ct.c_uint32),
        ("gen", ct.c_uint32),
        ("dport", ct.c_uint16),
        ("rule", ct.c_uint8),
        ("verdict", ct.c_uint8),
        ("hook", ct.c_uint8),
        ("family", ct.c_uint8),
        ("proto", ct.c_uint8),
        ("reason", ct.c_uint8),
        ("daddr", ct.c_uint8 * 16),
        ("comm", ct.c_char * COMM_LEN),
    ]


MAX_LEARN = 16384


class LearnKey(ct.Structure):
    _fields_ = [
        ("policy", ct.c_uint32),
        ("uid", ct.c_uint32),
        ("exe_ino", ct.c_uint64),
        ("exe_dev", ct.c_uint32),
        ("dport", ct.c_uint16),
        ("family", ct.c_uint8),
        ("proto", ct.c_uint8),
        ("daddr", ct.c_uint8 * 16),
    ]


class LearnVal(ct.Structure):
    _fields_ = [
        ("allowed", ct.c_uint64),
        ("blocked", ct.c_uint64),
        ("would_block", ct.c_uint64),
        ("first_ns", ct.c_uint64),
        ("last_ns", ct.c_uint64),
    ]


# The header's struct name for each mirror, for the layout test.
C_NAMES: dict[str, type[ct.Structure]] = {
    "bh_state": State,
    "bh_scope_key": ScopeKey,
    "bh_scope_val": ScopeVal,
    "bh_policy": Policy,
    "bh_port_span": PortSpan,
    "bh_inline_key": InlineKey,
    "bh_dst4_key": Dst4Key,
    "bh_filter_page": FilterPage,
    "bh_dst6_key": Dst6Key,
    "bh_port_key": PortKey,
    "bh_comm_key": CommKey,
    "bh_exe_key": ExeKey,
    "bh_id_key": IdKey,
    "bh_unit_key": UnitKey,
    "bh_pattern": Pattern,
    "bh_counter": Counter,
    "bh_event": Event,
    "bh_learn_key": LearnKey,
    "bh_learn_val": LearnVal,
}

# Global counter slots (BH_G_* in the header).
G_EVENTS = 1
G_EVENTS_LOST = 2
G_NO_STATE = 3
G_LEARN_FULL = 4
G_SCOPE_NAMED = 5
G_REFUSED = 6
G_SCOPE_FULL = 7
G_MAX = 8
