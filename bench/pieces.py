"""The pieces a judging program is made of, each alone in an LSM program on
socket_connect, so that the kernel's accounting prices them one by one
(bench/guest_bench.py's phase `pieces`).

Each piece is the empty program ("floor") plus one kind of work bouheki's
socket_connect does on its way to a verdict, on maps declared as bouheki
declares them (bpf/bouheki.h's structs, the same types, flags and sizes).
A piece's cost is its ns per call minus the floor's in the same round. The
last piece does (b)'s whole path (what any scoped decision needs: the
cgroup, the state, the scope, the policy, the destination's filter, the
rule's counter) in one program, to show how far the pieces add up.
"""

from __future__ import annotations

# name -> (what it stands for, C body). The body may set r (never nonzero at
# run time: the entries found hold zeros, the trie lookup misses as (c)'s
# does) so that the compiler keeps the work. The scope and the policy are
# hits, as for a judged unit (the key is fixed: the loop's unit is new each
# run, so its cgroup id is not known when the maps are filled).
PIECES: dict[str, tuple[str, str]] = {
    "floor": ("the empty program", ""),
    "cgroup_id": (
        "bpf_get_current_cgroup_id()",
        "if (bpf_get_current_cgroup_id() == 1) r = 1;",
    ),
    "state": (
        "the state (1-slot array)",
        "int z = 0; struct bh_state *s = state.lookup(&z); if (s && s->active_gen == 7) r = 1;",
    ),
    "scope": (
        "the scope (preallocated hash of scopes, a hit)",
        "struct bh_scope_key k = {.gen = 1, .cgroup_id = 2};"
        " struct bh_scope_val *v = scopes.lookup(&k); if (v && v->policy == 7) r = 1;",
    ),
    "policy": (
        "the policy (its slot in the array's half for the generation)",
        "int ps = bh_policy_slot(1, 1); struct bh_policy *p = policies.lookup(&ps);"
        " if (p && p->gen == 1 && p->flags == 7) r = 1;",
    ),
    "policy_hash": (
        "the policy in a hash keyed by generation and id, a hit (before issue 13's change)",
        "struct bench_policy_key k = {.gen = 1, .policy = 1};"
        " struct bh_policy *p = policies_hash.lookup(&k); if (p && p->flags == 7) r = 1;",
    ),
    "dst4_100k": (
        "the destination (LPM trie of 100,000 prefixes)",
        "struct bh_dst4_key k = {.prefixlen = 64 + 32, .gen = 1, .policy = 1,"
        " .addr = {127, 0, 0, 1}}; u64 *m = dst4.lookup(&k); if (m && *m == 7) r = 1;",
    ),
    "filter": (
        "the destination's filter (its page of the /22 bitmap; a clear bit, as for (c)'s "
        "connects, so the trie is not walked)",
        "u32 a = 0x7f000001; int pg = bh_filter_page(1, 1, a);"
        " struct bh_filter_page *fp = filters.lookup(&pg);"
        " if (fp && ((fp->w[(a >> 16) & 511] >> ((a >> 10) & 63)) & 1)) r = 1;",
    ),
    "counter": (
        "the rule's counter (per-CPU slot)",
        "int i = 1 * 65 + 3; struct bh_counter *c = counters.lookup(&i); if (c) c->hits += 1;",
    ),
    "cred": (
        "uid and gid (task->cred)",
        "void *t = bpf_get_current_task_btf(); void *cred = BH_LOAD(void *, t, BH_OFF_TASK_CRED);"
        " if (BH_LOAD(u32, cred, BH_OFF_CRED_UID) == 4242"
        " && BH_LOAD(u32, cred, BH_OFF_CRED_GID) == 4242) r = 1;",
    ),
    "comm": (
        "comm (task->comm)",
        "void *t = bpf_get_current_task_btf();"
        " if (BH_LOAD(u64, t, BH_OFF_TASK_COMM) == 7 && BH_LOAD(u64, t, BH_OFF_TASK_COMM + 8) == 7)"
        " r = 1;",
    ),
    "uid_map": (
        "a uid in its own hash (a miss among (c)'s 20 uids): each of (c)'s port, uid, gid and "
        "comm lookups before issue 13's inline sets",
        "struct bh_id_key k = {.gen = 1, .policy = 1, .id = 4242};"
        " u64 *m = uids.lookup(&k); if (m && *m == 7) r = 1;",
    ),
    "inline_scan": (
        "the policy, then a scan of (c)'s inline sets in its value: 39 port spans and 39 "
        "uid, gid and comm keys (misses, as (c)'s connect)",
        "int ps = bh_policy_slot(1, 1); struct bh_policy *p = policies.lookup(&ps);"
        " if (p && p->gen == 1) { u32 n = p->n_spans, e = p->exe_end;"
        "\n#pragma clang loop unroll(disable)\n"
        " for (u32 i = 0; i < BH_INLINE_SPANS; i++) { if (i >= n) break;"
        " struct bh_port_span *sp = &p->spans[i];"
        " if ((sp->protos & 2) && sp->lo <= 9 && 9 <= sp->hi) { r = 1; break; } }"
        "\n#pragma clang loop unroll(disable)\n"
        " for (u32 i = 0; i < BH_INLINE_KEYS; i++) { if (i >= e) break;"
        " if (p->keys[i].a == 4242 && p->keys[i].b == 0) { r = 1; break; } } }",
    ),
    "b_path": (
        "(b)'s path in one program: cgroup, state, scope, policy, the destination's filter, "
        "counter",
        "if (bpf_get_current_cgroup_id() == 1) r = 1; int z = 0;"
        " struct bh_state *s = state.lookup(&z); if (s && s->active_gen == 7) r = 1;"
        " struct bh_scope_key k = {.gen = 1, .cgroup_id = 2};"
        " struct bh_scope_val *v = scopes.lookup(&k); if (v && v->policy == 7) r = 1;"
        " int ps = bh_policy_slot(1, 1);"
        " struct bh_policy *p = policies.lookup(&ps); if (p && p->gen == 1 && p->flags == 7) r = 1;"
        " u32 a = 0x7f000001; int pg = bh_filter_page(1, 1, a);"
        " struct bh_filter_page *fp = filters.lookup(&pg);"
        " if (fp && ((fp->w[(a >> 16) & 511] >> ((a >> 10) & 63)) & 1)) r = 1;"
        " int i = 1 * 65 + 3; struct bh_counter *c = counters.lookup(&i); if (c) c->hits += 1;",
    ),
}

_HEAD = """
#include <linux/socket.h>
#include "bouheki.h"
struct socket;
#define BH_LOAD(type, base, off) (*(type *)((const char *)(base) + (off)))
BPF_F_TABLE("array", int, struct bh_state, state, 1, 0);
BPF_F_TABLE("hash", struct bh_scope_key, struct bh_scope_val, scopes, BH_MAX_SCOPES, 0);
BPF_F_TABLE("array", int, struct bh_policy, policies, 2 * BH_MAX_POLICIES, 0);
struct bench_policy_key {
	u32 gen;
	u32 policy;
};
BPF_F_TABLE("hash", struct bench_policy_key, struct bh_policy, policies_hash, 2 * BH_MAX_POLICIES,
            BPF_F_NO_PREALLOC);
BPF_F_TABLE("lpm_trie", struct bh_dst4_key, u64, dst4, BH_MAX_DST4, BPF_F_NO_PREALLOC);
BPF_F_TABLE("array", int, struct bh_filter_page, filters, 2 * BH_FILTERS * BH_FILTER_PAGES, 0);
BPF_F_TABLE("hash", struct bh_id_key, u64, uids, BH_MAX_IDENT, BPF_F_NO_PREALLOC);
BPF_F_TABLE("percpu_array", int, struct bh_counter, counters,
            BH_MAX_POLICIES * (BH_MAX_RULES + 1), 0);
"""


def source(name: str) -> str:
    body = PIECES[name][1]
    return (
        _HEAD
        + "LSM_PROBE(socket_connect, struct socket *sock, struct sockaddr *address, int addrlen)\n"
        + "{\n\tint r = 0;\n\t"
        + body
        + "\n\treturn r ? 0 : 0;\n}\n"
    )


def fill(b, prefixes: list[str]) -> None:  # type: ignore[no-untyped-def]
    """The maps' entries the pieces find (or, for dst4, walk): one scope,
    one policy, the prefixes under policy 1 of generation 1."""
    import ctypes as ct
    import ipaddress

    scopes, policies, dst4 = b["scopes"], b["policies"], b["dst4"]
    k = scopes.Key()
    k.gen, k.cgroup_id = 1, 2
    scopes[k] = scopes.Leaf()
    from bouheki.kernel.layout import policy_slot

    leaf = policies.Leaf()
    leaf.gen = 1
    # (c)'s inline sets: 39 port spans, 39 uid, gid and comm keys.
    leaf.n_spans = leaf.exe_end = 39
    for i in range(39):
        leaf.spans[i].lo = leaf.spans[i].hi = 1000 + i
        leaf.spans[i].protos = 2
        leaf.keys[i].a = 5000 + i
    uids = b["uids"]
    for i in range(20):
        uk = uids.Key()
        uk.gen, uk.policy, uk.id = 1, 1, 5000 + i
        uids[uk] = ct.c_ulonglong(1)
    policies[ct.c_int(policy_slot(1, 1))] = leaf
    ph = b["policies_hash"]
    pk = ph.Key()
    pk.gen, pk.policy = 1, 1
    ph[pk] = ph.Leaf()
    one = ct.c_ulonglong(1)
    for p in prefixes:
        net = ipaddress.ip_network(p)
        dk = dst4.Key()
        dk.prefixlen, dk.gen, dk.policy = 64 + net.prefixlen, 1, 1
        for i, byte in enumerate(net.network_address.packed):
            dk.addr[i] = byte
        dst4[dk] = one
