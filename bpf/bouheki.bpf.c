/* bouheki: judge every outbound IPv4/IPv6 connect and addressed sendmsg
 * against the policy of the caller's cgroup. Compiled and loaded by bcc
 * (src/bouheki/kernel/loader.py), which passes the map sizes as -D flags.
 *
 * The decision is a bitmap classifier (DESIGN.md section 3): each dimension
 * of the connection is one lookup returning the mask of rules that accept
 * it; the lowest bit of the AND is the first matching rule. The cost is a
 * fixed handful of lookups whatever the number of rules or prefixes.
 * src/bouheki/policy/twin.py is the Python twin of bh_judge(). */
#include <linux/socket.h>
#include <linux/in.h>
#include <linux/in6.h>
#include "bouheki.h"

/* Kernel structs are read at offsets taken from the running kernel's BTF
 * (src/bouheki/kernel/btf.py passes BH_OFF_* as -D flags): their headers
 * would triple the compile time, and some are in no installed header. */
struct socket;
struct msghdr;
#define BH_READ(dst, base, off) \
	bpf_probe_read_kernel(&(dst), sizeof(dst), (const char *)(base) + (off))

#ifndef BH_MAX_SCOPES
#define BH_MAX_SCOPES 65536
#endif
#ifndef BH_MAX_DST4
#define BH_MAX_DST4 262144
#endif
#ifndef BH_MAX_DST6
#define BH_MAX_DST6 65536
#endif
#ifndef BH_MAX_PORTS
#define BH_MAX_PORTS 65536
#endif
#ifndef BH_MAX_IDENT
#define BH_MAX_IDENT 16384
#endif
#ifndef BH_RINGBUF_PAGES
#define BH_RINGBUF_PAGES 256
#endif

/* With BH_PIN_DIR, every map lives in the BPF file system: a new daemon
 * reuses its predecessor's maps, and programs whose links are pinned keep
 * enforcing them while no daemon runs (src/bouheki/kernel/pinning.py). */
#ifdef BH_PIN_DIR
#define BH_MAP(type, k, v, name, size, flags) \
	BPF_TABLE_PINNED(type, k, v, name, size, BH_PIN_DIR "/" #name, flags)
#else
#define BH_MAP(type, k, v, name, size, flags) BPF_F_TABLE(type, k, v, name, size, flags)
#endif

BH_MAP("array", int, struct bh_state, state, 1, 0);
BH_MAP("hash", struct bh_scope_key, struct bh_scope_val, scopes, BH_MAX_SCOPES, 0);
BH_MAP("hash", struct bh_policy_key, struct bh_policy, policies, 2 * BH_MAX_POLICIES, BPF_F_NO_PREALLOC);
BH_MAP("lpm_trie", struct bh_dst4_key, u64, dst4, BH_MAX_DST4, BPF_F_NO_PREALLOC);
BH_MAP("lpm_trie", struct bh_dst6_key, u64, dst6, BH_MAX_DST6, BPF_F_NO_PREALLOC);
BH_MAP("lpm_trie", struct bh_port_key, u64, ports, BH_MAX_PORTS, BPF_F_NO_PREALLOC);
BH_MAP("hash", struct bh_comm_key, u64, comms, BH_MAX_IDENT, BPF_F_NO_PREALLOC);
BH_MAP("hash", struct bh_exe_key, u64, exes, BH_MAX_IDENT, BPF_F_NO_PREALLOC);
BH_MAP("hash", struct bh_id_key, u64, uids, BH_MAX_IDENT, BPF_F_NO_PREALLOC);
BH_MAP("hash", struct bh_id_key, u64, gids, BH_MAX_IDENT, BPF_F_NO_PREALLOC);
BH_MAP("hash", struct bh_unit_key, struct bh_scope_val, unit_names, 4096, BPF_F_NO_PREALLOC);
BH_MAP("array", int, struct bh_pattern, patterns, 2 * BH_MAX_PATTERNS, 0);
/* The slices outside every delegated subtree: only directly below these does
 * a cgroup's name say which unit it is (below a service, scope or user
 * manager, anyone with the delegation can pick any name). */
BH_MAP("hash", struct bh_scope_key, u32, slices, 8192, BPF_F_NO_PREALLOC);
BH_MAP("percpu_array", int, struct bh_counter, counters, BH_MAX_POLICIES * (BH_MAX_RULES + 1), 0);
BH_MAP("percpu_array", int, u64, gcounters, BH_G_MAX, 0);
/* bcc's BPF_RINGBUF_OUTPUT with a pinnable section (bcc has no pinned form
 * of it): pinned, the ring buffer outlives a daemon, so the next one reads
 * what the programs reported meanwhile. */
#ifdef BH_PIN_DIR
#define BH_RINGBUF_SECTION "maps/ringbuf:" BH_PIN_DIR "/events"
#else
#define BH_RINGBUF_SECTION "maps/ringbuf"
#endif
struct events_table_t {
	int key;
	u32 leaf;
	int (*ringbuf_output)(void *, u64, u64);
	void *(*ringbuf_reserve)(u64);
	void (*ringbuf_discard)(void *, u64);
	void (*ringbuf_submit)(void *, u64);
	u32 max_entries;
};
__attribute__((section(BH_RINGBUF_SECTION)))
struct events_table_t events = { .max_entries = BH_RINGBUF_PAGES * PAGE_SIZE };

static __always_inline void bh_count(int slot)
{
	u64 *c = gcounters.lookup(&slot);
	if (c)
		*c += 1;
}

static __always_inline u64 bh_mask(u64 *found, u64 dflt)
{
	return found ? *found : dflt;
}

struct bh_conn {
	u8 family; /* AF_INET after unmapping ::ffff:a.b.c.d */
	u8 proto;
	u16 dport; /* host order */
	u8 daddr[16];
};

/* What the process is, as far as the policy cares. The cgroup, ids and
 * comm come from helpers; the executable and the mount namespace take chains
 * of dependent reads (most of a call's cost under bench/), so they are read
 * only when a decision or an event needs them. */
struct bh_who {
	u64 cgroup_id;
	u64 exe_ino;
	u32 exe_dev;
	u32 uid;
	u32 gid;
	u32 mntns;
	u8 have_exe;
	u8 have_mntns;
	char comm[BH_COMM_LEN];
};

static __always_inline void bh_identify(struct bh_who *who)
{
	u64 ugid = bpf_get_current_uid_gid();

	who->cgroup_id = bpf_get_current_cgroup_id();
	who->uid = (u32)ugid;
	who->gid = ugid >> 32;
	bpf_get_current_comm(who->comm, sizeof(who->comm));
}

/* The executable by inode: unlike comm, a process cannot rename it. */
static __always_inline void bh_read_exe(struct bh_who *who)
{
	void *task = (void *)bpf_get_current_task();
	void *mm = NULL, *exe = NULL, *inode = NULL, *sb = NULL;

	if (who->have_exe)
		return;
	who->have_exe = 1;
	BH_READ(mm, task, BH_OFF_TASK_MM);
	if (!mm)
		return;
	BH_READ(exe, mm, BH_OFF_MM_EXE_FILE);
	if (!exe)
		return;
	BH_READ(inode, exe, BH_OFF_FILE_INODE);
	if (!inode)
		return;
	BH_READ(who->exe_ino, inode, BH_OFF_INODE_INO);
	BH_READ(sb, inode, BH_OFF_INODE_SB);
	if (sb)
		BH_READ(who->exe_dev, sb, BH_OFF_SB_DEV);
}

static __always_inline u32 bh_read_mntns(struct bh_who *who)
{
	void *task = (void *)bpf_get_current_task();
	void *nsp = NULL, *mnt_ns = NULL;

	if (who->have_mntns)
		return who->mntns;
	who->have_mntns = 1;
	BH_READ(nsp, task, BH_OFF_TASK_NSPROXY);
	if (nsp) {
		BH_READ(mnt_ns, nsp, BH_OFF_NSPROXY_MNT_NS);
		if (mnt_ns)
			BH_READ(who->mntns, mnt_ns, BH_OFF_MNT_NS_NS + BH_OFF_NS_COMMON_INUM);
	}
	return who->mntns;
}

/* Which policy judges this process: its cgroup's, else the host's. */
static __always_inline struct bh_policy *bh_scope(u32 gen, struct bh_who *who, u32 host_mntns,
						  u32 *policy_id)
{
	struct bh_scope_key sk = {.gen = gen, .cgroup_id = who->cgroup_id};
	struct bh_scope_val *sv = scopes.lookup(&sk);
	struct bh_policy_key pk = {.gen = gen};
	struct bh_policy *p;

	if (sv) {
		pk.policy = sv->policy;
		p = policies.lookup(&pk);
		/* A container policy does not judge a process that shares the
		 * host's mount namespace: it is not a container. */
		if (p && !((p->flags & BH_POLICY_FOREIGN_MNTNS_ONLY) &&
			   bh_read_mntns(who) == host_mntns)) {
			*policy_id = sv->policy;
			return p;
		}
	}
	sk.cgroup_id = 0;
	sv = scopes.lookup(&sk);
	if (!sv)
		return NULL;
	pk.policy = sv->policy;
	*policy_id = sv->policy;
	return policies.lookup(&pk);
}

static __always_inline u64 bh_match(u32 gen, u32 policy, struct bh_policy *p, struct bh_conn *c,
				    struct bh_who *who)
{
	u64 m = p->valid_bits;

	if (c->family == AF_INET) {
		struct bh_dst4_key k = {.prefixlen = 64 + 32, .gen = gen, .policy = policy};
		__builtin_memcpy(k.addr, c->daddr, 4);
		m &= bh_mask(dst4.lookup(&k), p->dst_default);
	} else {
		struct bh_dst6_key k = {.prefixlen = 64 + 128, .gen = gen, .policy = policy};
		__builtin_memcpy(k.addr, c->daddr, 16);
		m &= bh_mask(dst6.lookup(&k), p->dst_default);
	}
	if (!m)
		return 0;
	{
		struct bh_port_key k = {.prefixlen = 72 + 16, .gen = gen, .policy = policy,
					.proto = c->proto};
		k.port[0] = c->dport >> 8;
		k.port[1] = c->dport & 0xff;
		m &= bh_mask(ports.lookup(&k), p->port_default);
	}
	if (!m)
		return 0;
	if (p->flags & BH_POLICY_KEYED_UID) {
		struct bh_id_key k = {.gen = gen, .policy = policy, .id = who->uid};
		m &= bh_mask(uids.lookup(&k), p->uid_default);
	} else {
		m &= p->uid_default;
	}
	if (p->flags & BH_POLICY_KEYED_GID) {
		struct bh_id_key k = {.gen = gen, .policy = policy, .id = who->gid};
		m &= bh_mask(gids.lookup(&k), p->gid_default);
	} else {
		m &= p->gid_default;
	}
	if (p->flags & BH_POLICY_KEYED_COMM) {
		struct bh_comm_key k = {.gen = gen, .policy = policy};
		__builtin_memcpy(k.comm, who->comm, BH_COMM_LEN);
		m &= bh_mask(comms.lookup(&k), p->comm_default);
	} else {
		m &= p->comm_default;
	}
	if (!m)
		return 0;
	/* Last: the only key that costs more than a helper call to build. */
	if (p->flags & BH_POLICY_KEYED_EXE) {
		bh_read_exe(who);
		struct bh_exe_key k = {.gen = gen, .policy = policy, .ino = who->exe_ino,
				       .dev = who->exe_dev};
		m &= bh_mask(exes.lookup(&k), p->exe_default);
	} else {
		m &= p->exe_default;
	}
	return m;
}

/* Index of the lowest set bit of a non-zero mask: the first matching rule.
 * (__builtin_ctzll crashes the bcc toolchain of Debian 12.) */
static __always_inline u32 bh_lowest_bit(u64 m)
{
	u32 n = 0;

	if (!(m & 0xffffffffULL)) { n += 32; m >>= 32; }
	if (!(m & 0xffff)) { n += 16; m >>= 16; }
	if (!(m & 0xff)) { n += 8; m >>= 8; }
	if (!(m & 0xf)) { n += 4; m >>= 4; }
	if (!(m & 0x3)) { n += 2; m >>= 2; }
	if (!(m & 0x1)) n += 1;
	return n;
}

static __always_inline int bh_judge(struct bh_conn *c, u8 hook)
{
	int zero = 0;
	struct bh_state *st = state.lookup(&zero);
	struct bh_who who = {};
	struct bh_policy *p;
	u32 policy_id = 0, gen, rule = BH_DEFAULT_RULE;
	u8 verdict = BH_VERDICT_ALLOWED;
	int block = 0;
	u64 m;

	if (!st || !st->active_gen) {
		bh_count(BH_G_NO_STATE);
		return 0;
	}
	gen = st->active_gen;
	bh_identify(&who);
	p = bh_scope(gen, &who, st->host_mntns, &policy_id);
	if (!p)
		return 0;
	bh_count(BH_G_CHECKS);

	m = bh_match(gen, policy_id, p, c, &who);
	if (m) {
		rule = bh_lowest_bit(m);
		block = !((p->allow_bits >> rule) & 1);
	} else {
		block = p->default_action;
	}
	if (block)
		verdict = (p->flags & BH_POLICY_MONITOR) ? BH_VERDICT_WOULD_BLOCK : BH_VERDICT_BLOCKED;

	if (policy_id < BH_MAX_POLICIES) {
		int slot = policy_id * (BH_MAX_RULES + 1) + rule;
		struct bh_counter *ctr = counters.lookup(&slot);
		if (ctr) {
			ctr->hits += 1;
			if (verdict == BH_VERDICT_BLOCKED)
				ctr->blocked += 1;
			else if (verdict == BH_VERDICT_WOULD_BLOCK)
				ctr->would_block += 1;
		}
	}

	if (verdict != BH_VERDICT_ALLOWED || (p->flags & BH_POLICY_LOG_ALLOWED)) {
		struct bh_event *e;

		bh_read_exe(&who);
		e = events.ringbuf_reserve(sizeof(struct bh_event));
		if (!e) {
			/* Never lose an event silently: the daemon reports this. */
			bh_count(BH_G_EVENTS_LOST);
		} else {
			u64 pidtgid = bpf_get_current_pid_tgid();
			e->ts_ns = bpf_ktime_get_ns();
			e->cgroup_id = who.cgroup_id;
			e->exe_ino = who.exe_ino;
			e->exe_dev = who.exe_dev;
			e->pid = pidtgid >> 32;
			e->tid = (u32)pidtgid;
			e->uid = who.uid;
			e->gid = who.gid;
			e->policy = policy_id;
			e->gen = gen;
			e->dport = c->dport;
			e->rule = rule;
			e->verdict = verdict;
			e->hook = hook;
			e->family = c->family;
			e->proto = c->proto;
			e->pad = 0;
			__builtin_memcpy(e->daddr, c->daddr, 16);
			__builtin_memcpy(e->comm, who.comm, BH_COMM_LEN);
			events.ringbuf_submit(e, 0);
			bh_count(BH_G_EVENTS);
		}
	}
	return verdict == BH_VERDICT_BLOCKED ? -EPERM : 0;
}

/* Fill c from a kernel copy of a sockaddr. Returns 0 when the hook must not
 * judge it: not IPv4/IPv6, or port 0 on TCP/UDP (glibc's getaddrinfo sorts
 * addresses with UDP connects to port 0; nothing is sent). */
static __always_inline int bh_parse(struct bh_conn *c, void *sk, void *addr, int addrlen)
{
	u16 family = 0;
	u16 proto = 0;

	if (!addr || addrlen < (int)sizeof(struct sockaddr_in))
		return 0;
	bpf_probe_read_kernel(&family, sizeof(family), addr);
	BH_READ(proto, sk, BH_OFF_SOCK_PROTOCOL);
	c->proto = proto;
	if (family == AF_INET) {
		struct sockaddr_in sin = {};
		bpf_probe_read_kernel(&sin, sizeof(sin), addr);
		c->family = AF_INET;
		c->dport = ntohs(sin.sin_port);
		__builtin_memcpy(c->daddr, &sin.sin_addr.s_addr, 4);
	} else if (family == AF_INET6) {
		struct sockaddr_in6 sin6 = {};
		if (addrlen < (int)sizeof(struct sockaddr_in6))
			return 0;
		bpf_probe_read_kernel(&sin6, sizeof(sin6), addr);
		c->dport = ntohs(sin6.sin6_port);
		u32 *w = (u32 *)sin6.sin6_addr.in6_u.u6_addr32;
		/* ::ffff:a.b.c.d reaches IPv4 hosts: judge it as IPv4. */
		if (w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff)) {
			c->family = AF_INET;
			__builtin_memcpy(c->daddr, &w[3], 4);
		} else {
			c->family = AF_INET6;
			__builtin_memcpy(c->daddr, sin6.sin6_addr.in6_u.u6_addr8, 16);
		}
	} else {
		return 0;
	}
	if (c->dport == 0 && (c->proto == IPPROTO_TCP || c->proto == IPPROTO_UDP))
		return 0;
	return 1;
}

LSM_PROBE(socket_connect, struct socket *sock, struct sockaddr *address, int addrlen)
{
	struct bh_conn c = {};
	void *sk = NULL;

	BH_READ(sk, sock, BH_OFF_SOCKET_SK);
	if (!sk || !bh_parse(&c, sk, address, addrlen))
		return 0;
	return bh_judge(&c, BH_HOOK_CONNECT);
}

/* Unconnected UDP (sendto, sendmsg, sendmmsg) and TCP Fast Open name their
 * destination per message and never pass through socket_connect. */
LSM_PROBE(socket_sendmsg, struct socket *sock, struct msghdr *msg, int size)
{
	struct bh_conn c = {};
	void *sk = NULL, *name = NULL;
	int namelen = 0;

	BH_READ(sk, sock, BH_OFF_SOCKET_SK);
	if (!sk)
		return 0;
	BH_READ(name, msg, BH_OFF_MSGHDR_NAME);
	if (!name)
		return 0;
	BH_READ(namelen, msg, BH_OFF_MSGHDR_NAMELEN);
	if (!bh_parse(&c, sk, name, namelen))
		return 0;
	return bh_judge(&c, BH_HOOK_SENDMSG);
}

/* A new cgroup gets its policy before any process can run in it, so a
 * unit's first connect is judged even if the daemon has not seen the unit
 * yet: the deepest unit with a policy wins, so the cgroup's own name (a unit
 * with a policy, exact or by pattern) comes before its parent's entry. */
/* Does buf (BH_PATTERN_LEN readable bytes) start with the len bytes of s?
 * Word compares under a length mask: no data-dependent branches, so the
 * verifier has one path to check however many patterns there are. */
static __always_inline int bh_starts_with(const char *buf, const char *s, u32 len)
{
	u64 diff = 0;

#pragma unroll
	for (int w = 0; w < BH_PATTERN_LEN / 8; w++) {
		u64 a = *(u64 *)(buf + 8 * w);
		u64 b = *(u64 *)(s + 8 * w);
		s32 n = (s32)len - 8 * w;
		u64 mask = n >= 8 ? ~0ULL : n <= 0 ? 0 : ((1ULL << (8 * n)) - 1);
		diff |= (a ^ b) & mask;
	}
	return diff == 0;
}

static __always_inline int bh_pattern_match(struct bh_pattern *p, const char *name, u32 name_len)
{
	u64 tail[BH_PATTERN_LEN / 8] = {};
	u32 plen = p->prefix_len, slen = p->suffix_len;

	if (plen > BH_PATTERN_LEN || slen > BH_PATTERN_LEN || name_len < plen + slen)
		return 0;
	if (!bh_starts_with(name, p->prefix, plen))
		return 0;
	u32 off = name_len - slen;
	if (off > BH_UNIT_NAME_LEN - BH_PATTERN_LEN)
		return 0;
	bpf_probe_read_kernel(tail, sizeof(tail), name + off);
	return bh_starts_with((const char *)tail, p->suffix, slen);
}

static __always_inline void bh_assign(u32 gen, u64 id, u64 parent, struct bh_unit_key *uk,
				      u32 name_len)
{
	struct bh_scope_key ck = {.gen = gen, .cgroup_id = id};
	struct bh_scope_key pk = {.gen = gen, .cgroup_id = parent};
	struct bh_scope_val *v;

	/* Only directly below an undelegated slice does a name say which unit
	 * a cgroup is; unit names are unique, whichever slice holds the unit. */
	struct bh_scope_key sk = {.gen = gen, .cgroup_id = parent};
	if (!slices.lookup(&sk))
		goto inherit;
	uk->gen = gen;
	uk->parent_id = 0;
	v = unit_names.lookup(uk);
	if (v) {
		struct bh_scope_val copy = *v;
		scopes.update(&ck, &copy);
		bh_count(BH_G_SCOPE_NAMED);
		return;
	}
	/* A new slice directly below a known slice is known too. */
	struct bh_pattern slice = {.suffix_len = 6};
	__builtin_memcpy(slice.suffix, ".slice", 6);
	if (bh_pattern_match(&slice, uk->name, name_len)) {
		u32 one = 1;
		sk.cgroup_id = id;
		slices.update(&sk, &one);
	}
	for (int i = 0; i < 2 * BH_MAX_PATTERNS; i++) {
		int idx = i;
		struct bh_pattern *p = patterns.lookup(&idx);
		if (!p || p->gen != gen || (p->parent_id && p->parent_id != parent))
			continue;
		if (bh_pattern_match(p, uk->name, name_len)) {
			struct bh_scope_val val = {.policy = p->policy};
			scopes.update(&ck, &val);
			bh_count(BH_G_SCOPE_NAMED);
			return;
		}
	}
inherit:
	v = scopes.lookup(&pk);
	if (v) {
		struct bh_scope_val copy = *v;
		scopes.update(&ck, &copy);
		bh_count(BH_G_SCOPE_INHERIT);
	}
}

/* The ids of a cgroup of the unified hierarchy (hierarchy_id 0) and of its
 * parent; 0 for the v1 hierarchies of a hybrid host, whose kernfs ids are a
 * separate number space. */
static __always_inline int bh_cgroup_ids(void *cgrp, u64 *id, u64 *parent, char *name,
					 u32 *name_len)
{
	void *root = NULL, *kn = NULL, *pkn = NULL;
	const char *kname = NULL;
	int hid = -1;

	BH_READ(root, cgrp, BH_OFF_CGROUP_ROOT);
	if (root)
		BH_READ(hid, root, BH_OFF_CGROUP_ROOT_HID);
	if (hid != 0)
		return 0;
	BH_READ(kn, cgrp, BH_OFF_CGROUP_KN);
	if (!kn)
		return 0;
	BH_READ(*id, kn, BH_OFF_KN_ID);
	BH_READ(pkn, kn, BH_OFF_KN_PARENT);
	if (pkn)
		BH_READ(*parent, pkn, BH_OFF_KN_ID);
	if (name) {
		BH_READ(kname, kn, BH_OFF_KN_NAME);
		int n = bpf_probe_read_kernel_str(name, BH_UNIT_NAME_LEN, kname);
		*name_len = n > 0 ? n - 1 : 0;
	}
	return 1;
}

RAW_TRACEPOINT_PROBE(cgroup_mkdir)
{
	struct bh_unit_key uk = {};
	u64 id = 0, parent = 0;
	u32 name_len = 0;
	int zero = 0;
	struct bh_state *st = state.lookup(&zero);

	if (!st || !bh_cgroup_ids((void *)ctx->args[0], &id, &parent, uk.name, &name_len) ||
	    !parent)
		return 0;
	if (st->active_gen)
		bh_assign(st->active_gen, id, parent, &uk, name_len);
	/* A reload in progress writes pending_gen; its cgroup walk may already
	 * have passed this parent. */
	if (st->pending_gen && st->pending_gen != st->active_gen)
		bh_assign(st->pending_gen, id, parent, &uk, name_len);
	return 0;
}

RAW_TRACEPOINT_PROBE(cgroup_rmdir)
{
	u64 id = 0, parent = 0;
	int zero = 0;
	struct bh_state *st = state.lookup(&zero);

	if (!st || !bh_cgroup_ids((void *)ctx->args[0], &id, &parent, NULL, NULL))
		return 0;
	struct bh_scope_key k = {.gen = st->active_gen, .cgroup_id = id};
	scopes.delete(&k);
	slices.delete(&k);
	if (st->pending_gen && st->pending_gen != st->active_gen) {
		k.gen = st->pending_gen;
		scopes.delete(&k);
		slices.delete(&k);
	}
	return 0;
}
