/* Structs shared between the BPF programs and src/bouheki/kernel/layout.py.
 * Keep both in step: tests/unit/test_layout.py checks sizes and offsets.
 *
 * Every key carries a generation: the daemon writes a whole new generation,
 * flips state.active_gen, then deletes the old one, so a hook sees either the
 * old or the new policy, never a mix (doc/DESIGN.md section 3). */
#ifndef BOUHEKI_H
#define BOUHEKI_H

#define BH_MAX_RULES 64
#define BH_DEFAULT_RULE 64
#define BH_MAX_POLICIES 1024
/* The host's policy's id, reserved for it: a hook reads its slot of the
 * policies array, not a scope entry (one hash lookup less). */
#define BH_HOST_POLICY 0
#define BH_COMM_LEN 16

#define BH_POLICY_MONITOR 1
#define BH_POLICY_FOREIGN_MNTNS_ONLY 2
#define BH_POLICY_LOG_ALLOWED 4
/* learn = true: each judged connection is counted in the learned map. */
#define BH_POLICY_LEARN 8
/* The policy names SCTP in a rule: without it, SCTP sockets are refused in
 * its scope (peer-advertised SCTP paths never pass a socket hook). */
#define BH_POLICY_SCTP 128

#define BH_VERDICT_ALLOWED 0
#define BH_VERDICT_BLOCKED 1
#define BH_VERDICT_WOULD_BLOCK 2

#define BH_HOOK_CONNECT 0
#define BH_HOOK_SENDMSG 1
#define BH_HOOK_SETSOCKOPT 2
#define BH_HOOK_SOCKET 3      /* socket_create */
#define BH_HOOK_SCTP 4        /* sctp_bind_connect: connectx, primary paths */

/* Why a hook refused, in bh_event.reason. BH_REASON_POLICY: the rules
 * decided; the others fail closed whatever the rules say (doc/THREATS.md). */
#define BH_REASON_POLICY 0
#define BH_REASON_ADDRESS 1   /* an address form the programs do not judge */
#define BH_REASON_ROUTING 2   /* an option that routes packets elsewhere */
#define BH_REASON_SCTP 3      /* SCTP in a scope whose policy does not name it */
#define BH_REASON_BATCH 4     /* sendmmsg naming destinations: the kernel skips
			       * the hook for repeated names (____sys_sendmsg) */
#define BH_REASON_FAMILY 5    /* a socket family the programs do not judge */

/* global counter slots */
/* slot 0 is free: judged calls are the rules' hits and the refusals */
#define BH_G_EVENTS 1        /* events written to the ring buffer */
#define BH_G_EVENTS_LOST 2   /* events that could not be reserved */
#define BH_G_NO_STATE 3      /* hook ran before any generation was active */
#define BH_G_LEARN_FULL 4    /* connections of learning policies the full learned map could not record */
#define BH_G_SCOPE_NAMED 5   /* cgroups given a unit policy by name at cgroup_mkdir */
#define BH_G_REFUSED 6       /* judged calls refused whatever the rules (a BH_REASON_*) */
#define BH_G_SCOPE_FULL 7    /* unit cgroups or slices the full maps could not record */
#define BH_G_MAX 8

struct bh_state {
	__u32 active_gen;  /* 0: nothing enforced yet */
	__u32 pending_gen; /* generation being written; mkdir copies into it too */
	__u32 host_mntns;  /* inode of the host's mount namespace */
	__u32 flags;
};

/* cgroup id -> policy, for the cgroups of units and slices that have one. */
struct bh_scope_key {
	__u32 gen;
	__u32 pad;
	__u64 cgroup_id;
};

struct bh_scope_val {
	__u32 policy;
	__u32 flags;
};

/* A policy lives in slot bh_policy_slot(gen, id) of the policies array,
 * one half per generation parity (id < BH_MAX_POLICIES): writing
 * generation N+1 never touches what a hook holding generation N reads. A
 * slot of the old parity is rewritten only after an RCU grace period
 * (kernel/generation.py), and a hook takes a slot only if its gen is the
 * one it read from the state. An array slot costs a hook what the state's
 * does; a hash lookup cost ~1.3 us more under TCG (bench/). Python's
 * mirror: layout.policy_slot. */
static __inline__ __attribute__((always_inline)) __u32 bh_policy_slot(__u32 gen, __u32 id)
{
	return (gen & 1) * BH_MAX_POLICIES + id;
}

/* A filter in front of a policy's IPv4 destination trie: one bit per /22
 * block of the address space, set when a prefix of the policy's meets the
 * block. A clear bit means the trie would miss, so the hook takes the
 * default without walking it: one page of an array against a walk of
 * ~17 nodes for 100,000 prefixes, each a cold touch under TCG (bench/).
 * BH_FILTERS filters per generation parity, given to the policies with
 * the most IPv4 prefixes (kernel/pack.py filter_slots); a policy's filter
 * is 1..BH_FILTERS in bh_policy.filter4, 0 for none. The slots of a
 * parity are rewritten, like the policies', only after a grace period.
 * Python's mirror: layout.filter_page and pack.filter_words. */
#define BH_FILTERS 4
#define BH_FILTER_BLOCK_BITS 22
#define BH_FILTER_PAGE_WORDS 512 /* a page: 32,768 blocks */
#define BH_FILTER_PAGES 128      /* (1 << 22) / (64 * 512) */

struct bh_filter_page {
	__u64 w[BH_FILTER_PAGE_WORDS];
};

/* The page of filter (1..BH_FILTERS) of generation gen's parity that
 * holds addr's block (addr in host order); the word in the page is
 * (addr >> 16) & 511, the bit (addr >> 10) & 63. */
static __inline__ __attribute__((always_inline)) __u32 bh_filter_page(__u32 gen, __u32 filter,
								       __u32 addr)
{
	return ((gen & 1) * BH_FILTERS + filter - 1) * BH_FILTER_PAGES + (addr >> 25);
}

/* Small sets live in the policy's own value, which the hook has already
 * read: each lookup in a map of its own costs a cold touch (~1 us under
 * TCG, bench/), a scan of a few dozen inline entries much less. A
 * dimension with more keys than fit stays in its map (BH_DIM_* set in
 * in_maps). Python's mirror and its twin: policy/inline.py. */
#define BH_INLINE_SPANS 48
#define BH_INLINE_KEYS 64 /* a power of 2: bh_key_mask masks its index */
#define BH_DIM_PORT 1
#define BH_DIM_UID 2
#define BH_DIM_GID 4
#define BH_DIM_COMM 8
#define BH_DIM_EXE 16

/* A protocol's bit in bh_port_span.protos; 0 for a protocol no rule can
 * name (policy/tables.py Proto). Python's mirror: inline.PROTO_BITS. */
static __inline__ __attribute__((always_inline)) __u8 bh_proto_bit(__u8 proto)
{
	switch (proto) {
	case 1: return 1;    /* ICMP */
	case 6: return 2;    /* TCP */
	case 17: return 4;   /* UDP */
	case 33: return 8;   /* DCCP */
	case 58: return 16;  /* ICMPV6 */
	case 132: return 32; /* SCTP */
	case 136: return 64; /* UDPLITE */
	case 255: return 128; /* RAW */
	}
	return 0;
}

/* Ports lo..hi of the protocols in protos (bh_proto_bit) have mask: the
 * ports LPM table of a policy cut into the runs where its answer is
 * constant. The spans of one protocol never overlap; ports in no span
 * take port_default. */
struct bh_port_span {
	__u64 mask;
	__u16 lo;
	__u16 hi;
	__u8 protos;
	__u8 pad[3];
};

/* One inline key of an exact-match dimension: uid or gid in a; comm's
 * 16 bytes in a and b as the hook loads them; an executable's inode in a
 * and its dev in b. */
struct bh_inline_key {
	__u64 a;
	__u64 b;
	__u64 mask;
};

struct bh_policy {
	__u64 allow_bits; /* bit i: rule i allows */
	__u64 valid_bits; /* rules that exist */
	__u64 dst_default;
	__u64 port_default;
	__u64 comm_default;
	__u64 exe_default;
	__u64 uid_default;
	__u64 gid_default;
	/* Per dimension, the rules whose verdict depends on it: the bits in
	 * which some key's mask differs from the default (kernel/pack.py).
	 * While no rule still in the running varies in a dimension, its
	 * lookup cannot change the outcome and bh_match skips it. */
	__u64 dst_varies;
	__u64 port_varies;
	__u64 comm_varies;
	__u64 exe_varies;
	__u64 uid_varies;
	__u64 gid_varies;
	__u32 flags;
	__u32 default_action; /* 0 allow, 1 block */
	__u32 gen;            /* the generation this slot was written for */
	__u32 in_maps;        /* BH_DIM_* whose keys are in their map, not inline */
	/* The policy's id. bh_scope takes the host's from here, not as the
	 * constant BH_HOST_POLICY: the verifier then sees an unknown id on
	 * every path, as from a scope entry; a constant on one path made it
	 * walk all of bh_match twice (E2BIG on sctp_bind_connect). */
	__u32 id;
	/* The inline keys: uid in keys[0, uid_end), gid in [uid_end, gid_end),
	 * comm in [gid_end, comm_end), executable in [comm_end, exe_end). */
	__u8 n_spans;
	__u8 uid_end;
	__u8 gid_end;
	__u8 comm_end;
	__u8 exe_end;
	__u8 filter4; /* 1..BH_FILTERS: the filter of dst4's prefixes; 0: none */
	__u8 pad[6];
	struct bh_port_span spans[BH_INLINE_SPANS];
	struct bh_inline_key keys[BH_INLINE_KEYS];
};

struct bh_dst4_key {
	__u32 prefixlen; /* 64 + address bits */
	__u32 gen;
	__u32 policy;
	__u8 addr[4];
};

struct bh_dst6_key {
	__u32 prefixlen; /* 64 + address bits */
	__u32 gen;
	__u32 policy;
	__u8 addr[16];
};

struct bh_port_key {
	__u32 prefixlen; /* 72 + port bits */
	__u32 gen;
	__u32 policy;
	__u8 proto;
	__u8 port[2]; /* network order */
	__u8 pad;
};

struct bh_comm_key {
	__u32 gen;
	__u32 policy;
	char comm[BH_COMM_LEN];
};

struct bh_exe_key {
	__u32 gen;
	__u32 policy;
	__u64 ino;
	__u32 dev; /* kernel dev_t: major << 20 | minor */
	__u32 pad;
};

struct bh_id_key {
	__u32 gen;
	__u32 policy;
	__u32 id;
	__u32 pad;
};

/* A unit's cgroup that does not exist yet: when systemd creates a directory
 * called name directly below an undelegated slice, it gets policy at once. */
#define BH_UNIT_NAME_LEN 256 /* systemd's longest unit name, 255 bytes, and a NUL */
struct bh_unit_key {
	__u32 gen;
	__u32 pad;
	__u64 parent_id; /* reserved: 0 */
	char name[BH_UNIT_NAME_LEN];
};

/* Shell patterns of the form PREFIX*SUFFIX (docker-*.scope), checked by
 * cgroup_mkdir in a bounded loop. */
#define BH_MAX_PATTERNS 16
#define BH_PATTERN_LEN 32
struct bh_pattern {
	__u32 gen; /* 0: unused slot */
	__u32 policy;
	__u64 parent_id; /* 0: any parent */
	__u32 prefix_len;
	__u32 suffix_len;
	char prefix[BH_PATTERN_LEN];
	char suffix[BH_PATTERN_LEN];
};

struct bh_counter {
	__u64 hits;
	__u64 blocked;
	__u64 would_block;
};

struct bh_event {
	__u64 ts_ns;
	__u64 cgroup_id;
	__u64 exe_ino;
	__u32 exe_dev;
	__u32 pid; /* thread group id, as userspace knows it */
	__u32 tid;
	__u32 uid;
	__u32 gid;
	__u32 policy;
	__u32 gen;
	__u16 dport;
	__u8 rule;
	__u8 verdict;
	__u8 hook;
	__u8 family;
	__u8 proto;
	__u8 reason; /* BH_REASON_* */
	__u8 daddr[16]; /* IPv4 in the first 4 bytes */
	char comm[BH_COMM_LEN];
};

/* What learning policies saw (bouhekictl suggest): one entry per policy,
 * destination, protocol, port, uid and executable, counted by verdict. The
 * map is bounded (BH_MAX_LEARN); a connection that finds it full is
 * counted in BH_G_LEARN_FULL, never dropped silently. Policy ids outlive
 * reloads (service/policy_ids.py), so no generation is in the key. */
#define BH_MAX_LEARN 16384
struct bh_learn_key {
	__u32 policy;
	__u32 uid;
	__u64 exe_ino;
	__u32 exe_dev;
	__u16 dport;
	__u8 family;
	__u8 proto;
	__u8 daddr[16]; /* IPv4 in the first 4 bytes */
};

struct bh_learn_val {
	__u64 allowed;
	__u64 blocked;
	__u64 would_block;
	__u64 first_ns; /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u64 last_ns;
};

#endif
