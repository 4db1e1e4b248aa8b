/* bouheki: judge every outbound IPv4/IPv6 connect and addressed sendmsg
 * against the policy of the caller's cgroup. Compiled and loaded by bcc
 * (src/bouheki/kernel/loader.py), which passes the map sizes as -D flags.
 *
 * The decision is a bitmap classifier (doc/DESIGN.md section 3): each dimension
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
/* A plain load through a BTF-typed pointer (an LSM hook's argument, or a
 * pointer field loaded from one): the verifier checks the offset against
 * the kernel's BTF and turns the load into one that cannot fault, so no
 * helper call is needed (~0.3 us each under TCG, bench/). */
#define BH_LOAD(type, base, off) (*(type *)((const char *)(base) + (off)))

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
BH_MAP("array", int, struct bh_policy, policies, 2 * BH_MAX_POLICIES, 0);
BH_MAP("lpm_trie", struct bh_dst4_key, u64, dst4, BH_MAX_DST4, BPF_F_NO_PREALLOC);
BH_MAP("array", int, struct bh_filter_page, filters, 2 * BH_FILTERS * BH_FILTER_PAGES, 0);
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
BH_MAP("hash", struct bh_learn_key, struct bh_learn_val, learned, BH_MAX_LEARN, BPF_F_NO_PREALLOC);
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
	u8 proto;  /* the rules' protocol: bh_rule_proto */
	u16 dport; /* host order; 0 for protocols without ports */
	u8 reason; /* BH_REASON_*: not 0 refuses whatever the rules say */
	u8 named;  /* a sendmsg that names its destination: see bh_batched */
	u8 daddr[16];
};

/* What the process is, as far as the policy cares. Only the cgroup is read
 * for every call (it says which policy judges); the rest is read when a
 * decision or an event needs it, with plain loads from the current task's
 * BTF-typed struct (no helper call: bpf_get_current_comm and
 * bpf_get_current_uid_gid cost ~1.4 and ~0.7 us under TCG, bench/). Most
 * calls come from processes no policy judges, and most policies are keyed
 * on none of these. */
struct bh_who {
	u64 cgroup_id;
	u64 exe_ino;
	char comm[BH_COMM_LEN];
	u32 exe_dev;
	u32 uid;
	u32 gid;
	u32 mntns;
	u8 have_exe;
	u8 have_mntns;
	u8 have_ids;
	u8 have_comm;
};

/* current_uid() and current_gid(), what bpf_get_current_uid_gid gives:
 * the task's (subjective) cred, its kuid and kgid as the initial user
 * namespace sees them. */
static __always_inline void bh_read_ids(struct bh_who *who)
{
	struct task_struct *task;
	void *cred;

	if (who->have_ids)
		return;
	who->have_ids = 1;
	task = bpf_get_current_task_btf();
	cred = BH_LOAD(void *, task, BH_OFF_TASK_CRED);
	who->uid = BH_LOAD(u32, cred, BH_OFF_CRED_UID);
	who->gid = BH_LOAD(u32, cred, BH_OFF_CRED_GID);
}

/* The bytes of w before its first NUL, the rest zeroed; *ended tells
 * whether w had a NUL. Branch-free but for one test: a byte loop would
 * give the verifier a path per byte (E2BIG). The lowest high bit of
 * (w - 0x01..01) & ~w & 0x80..80 marks the first zero byte exactly (the
 * borrow can only mark bytes above it). */
static __always_inline u64 bh_before_nul(u64 w, u8 *ended)
{
	u64 t = (w - 0x0101010101010101ULL) & ~w & 0x8080808080808080ULL;

	if (!t)
		return w;
	*ended = 1;
	return w & (((t & -t) >> 7) - 1);
}

/* task->comm as bpf_get_current_comm copies it: up to its NUL, then zeros
 * (a key of the comms map is the name padded with NULs). The kernel pads
 * comm itself (__set_task_comm: strscpy_pad); this does not rely on it. */
static __always_inline void bh_read_comm(struct bh_who *who)
{
	struct task_struct *task;
	u64 w[2];
	u8 ended = 0;

	if (who->have_comm)
		return;
	who->have_comm = 1;
	task = bpf_get_current_task_btf();
	w[0] = bh_before_nul(BH_LOAD(u64, task, BH_OFF_TASK_COMM), &ended);
	w[1] = ended ? 0 : bh_before_nul(BH_LOAD(u64, task, BH_OFF_TASK_COMM + 8), &ended);
	w[1] &= 0x00ffffffffffffffULL; /* the 16th byte is always the NUL */
	__builtin_memcpy(who->comm, w, BH_COMM_LEN);
}

/* The executable by inode: unlike comm, a process cannot rename it. A
 * kernel thread has no mm: inode 0. */
static __always_inline void bh_read_exe(struct bh_who *who)
{
	struct task_struct *task;
	void *mm, *exe, *inode, *sb;

	if (who->have_exe)
		return;
	who->have_exe = 1;
	task = bpf_get_current_task_btf();
	mm = BH_LOAD(void *, task, BH_OFF_TASK_MM);
	if (!mm)
		return;
	exe = BH_LOAD(void *, mm, BH_OFF_MM_EXE_FILE);
	if (!exe)
		return;
	inode = BH_LOAD(void *, exe, BH_OFF_FILE_INODE);
	if (!inode)
		return;
	who->exe_ino = BH_LOAD(u64, inode, BH_OFF_INODE_INO);
	sb = BH_LOAD(void *, inode, BH_OFF_INODE_SB);
	if (sb)
		who->exe_dev = BH_LOAD(u32, sb, BH_OFF_SB_DEV);
}

static __always_inline u32 bh_read_mntns(struct bh_who *who)
{
	struct task_struct *task;
	void *nsp, *mnt_ns;

	if (who->have_mntns)
		return who->mntns;
	who->have_mntns = 1;
	task = bpf_get_current_task_btf();
	nsp = BH_LOAD(void *, task, BH_OFF_TASK_NSPROXY);
	if (nsp) {
		mnt_ns = BH_LOAD(void *, nsp, BH_OFF_NSPROXY_MNT_NS);
		if (mnt_ns)
			who->mntns = BH_LOAD(u32, mnt_ns, BH_OFF_MNT_NS_NS + BH_OFF_NS_COMMON_INUM);
	}
	return who->mntns;
}

/* How deep bh_scope looks for a cgroup's unit: systemd's deepest units
 * (a user manager's app.slice/...service) are at level 6 or so. */
#define BH_MAX_DEPTH 32

/* Is policy p for this process? A container policy does not judge a
 * process that shares the host's mount namespace: it is not a container. */
static __always_inline int bh_applies(struct bh_policy *p, struct bh_who *who, u32 host_mntns)
{
	return p && !((p->flags & BH_POLICY_FOREIGN_MNTNS_ONLY) &&
		      bh_read_mntns(who) == host_mntns);
}

/* Policy id's slot for generation gen, if that generation wrote it. */
static __always_inline struct bh_policy *bh_policy_of(u32 gen, u32 id)
{
	int slot = bh_policy_slot(gen, id);
	struct bh_policy *p;

	if (id >= BH_MAX_POLICIES)
		return NULL;
	p = policies.lookup(&slot);
	return p && p->gen == gen ? p : NULL;
}

/* Which policy judges this process: that of the deepest of its cgroup and
 * the cgroup's ancestors with an entry, else the host's. Only cgroups that
 * carry a policy of their own (a unit's, a slice's) have an entry; what is
 * below them, a delegated subtree above all, is found by this walk. So no
 * process can grow the map: making cgroups costs the kernel nothing here,
 * and no table an unprivileged process fills decides who is judged. */
static __always_inline struct bh_policy *bh_scope(u32 gen, struct bh_who *who, u32 host_mntns,
						  u32 *policy_id)
{
	struct bh_scope_key sk = {.gen = gen, .cgroup_id = who->cgroup_id};
	struct bh_scope_val *sv = scopes.lookup(&sk);
	struct bh_policy *p;
	u32 found = 0, have = 0;

	if (sv) {
		found = sv->policy;
		have = 1;
	} else {
		/* From the root down: the deepest entry wins. */
		for (int level = 1; level < BH_MAX_DEPTH; level++) {
			u64 id = bpf_get_current_ancestor_cgroup_id(level);
			if (!id || id == who->cgroup_id)
				break;
			sk.cgroup_id = id;
			sv = scopes.lookup(&sk);
			if (sv) {
				found = sv->policy;
				have = 1;
			}
		}
	}
	if (have) {
		p = bh_policy_of(gen, found);
		if (bh_applies(p, who, host_mntns)) {
			*policy_id = found;
			return p;
		}
	}
	/* The host's policy: its reserved slot, written by gen only when the
	 * configuration has one (policy/assemble.py assign_ids). A slot read
	 * is one cold lookup less than a scope entry's hash bucket. Its id
	 * comes from the value (struct bh_policy, id). */
	p = bh_policy_of(gen, BH_HOST_POLICY);
	if (p)
		*policy_id = p->id;
	return p;
}

/* The inline scans below run i from 0 to the array's size, and stop early
 * at the count the value gives. The count passes through an empty asm on
 * every turn: otherwise clang folds both bounds into one trip count,
 * min(count, size), that the verifier cannot bound (a count it does not
 * know), and refuses the loop. */
#define BH_OPAQUE(x) asm volatile("" : "+r"(x))

/* The mask of the inline span of proto that holds port, else def: the
 * answer of the ports LPM table the spans were cut from (policy/inline.py
 * port_spans; twin: inline.span_mask). */
static __always_inline u64 bh_span_mask(struct bh_policy *p, u8 proto, u16 port, u64 def)
{
	u8 bit = bh_proto_bit(proto);
	u32 n = p->n_spans;

#pragma clang loop unroll(disable)
	for (u32 i = 0; i < BH_INLINE_SPANS; i++) {
		struct bh_port_span *s;

		BH_OPAQUE(n);
		if (i >= n)
			break;
		s = &p->spans[i];
		if ((s->protos & bit) && s->lo <= port && port <= s->hi)
			return s->mask;
	}
	return def;
}

/* The mask of the inline key (a, b) among keys[from, to), else def: the
 * answer of the dimension's hash map (twin: inline.key_mask). The index is
 * (from + j) masked to the array, which the verifier bounds without
 * knowing from; no test is made on from (one per turn split the verifier's
 * paths by from's range, beyond its complexity limit). */
static __always_inline u64 bh_key_mask(struct bh_policy *p, u32 from, u32 to, u64 a, u64 b,
				       u64 def)
{
	u32 count = to - from;

#pragma clang loop unroll(disable)
	for (u32 j = 0; j < BH_INLINE_KEYS; j++) {
		struct bh_inline_key *k;

		BH_OPAQUE(count);
		if (j >= count)
			break;
		k = &p->keys[(from + j) & (BH_INLINE_KEYS - 1)];
		if (k->a == a && k->b == b)
			return k->mask;
	}
	return def;
}

/* Whether a prefix of the policy's may hold daddr: its block's bit in the
 * policy's filter (bouheki.h). Without the page, the trie decides. */
static __always_inline int bh_filter_hit(u32 gen, u32 filter, u8 *daddr)
{
	u32 a = ((u32)daddr[0] << 24) | ((u32)daddr[1] << 16) | ((u32)daddr[2] << 8) | daddr[3];
	int page = bh_filter_page(gen, filter, a);
	struct bh_filter_page *fp = filters.lookup(&page);
	u32 word = a >> 16;

	if (!fp)
		return 1;
	/* Masked after the barrier: clang builds the index from the address's
	 * bytes in a way the verifier cannot bound ("math between map_value
	 * pointer and register with unbounded min value"). */
	BH_OPAQUE(word);
	word &= BH_FILTER_PAGE_WORDS - 1;
	return (fp->w[word] >> ((a >> 10) & 63)) & 1;
}

/* The mask of rules that accept c from this process. Each dimension is
 * looked up only while a rule still in the running varies in it (m &
 * X_varies): otherwise every key's mask equals the default on the live
 * rules, so the default is the answer without touching the map (a cold
 * lookup, ~1 us under TCG). A dimension whose keys fit in the policy's
 * value is scanned there; only a large one pays for its map (in_maps).
 * Cheapest keys first, the executable last. */
static __always_inline u64 bh_match(u32 gen, u32 policy, struct bh_policy *p, struct bh_conn *c,
				    struct bh_who *who)
{
	u64 m = p->valid_bits;

	if (!(m & p->dst_varies)) {
		m &= p->dst_default;
	} else if (c->family == AF_INET) {
		if (p->filter4 && !bh_filter_hit(gen, p->filter4, c->daddr)) {
			m &= p->dst_default; /* what the trie's miss gives */
		} else {
			struct bh_dst4_key k = {.prefixlen = 64 + 32, .gen = gen, .policy = policy};
			__builtin_memcpy(k.addr, c->daddr, 4);
			m &= bh_mask(dst4.lookup(&k), p->dst_default);
		}
	} else {
		struct bh_dst6_key k = {.prefixlen = 64 + 128, .gen = gen, .policy = policy};
		__builtin_memcpy(k.addr, c->daddr, 16);
		m &= bh_mask(dst6.lookup(&k), p->dst_default);
	}
	if (!(m & p->port_varies)) {
		m &= p->port_default;
	} else if (!(p->in_maps & BH_DIM_PORT)) {
		m &= bh_span_mask(p, c->proto, c->dport, p->port_default);
	} else {
		struct bh_port_key k = {.prefixlen = 72 + 16, .gen = gen, .policy = policy,
					.proto = c->proto};
		k.port[0] = c->dport >> 8;
		k.port[1] = c->dport & 0xff;
		m &= bh_mask(ports.lookup(&k), p->port_default);
	}
	if (!(m & p->uid_varies)) {
		m &= p->uid_default;
	} else {
		bh_read_ids(who);
		if (!(p->in_maps & BH_DIM_UID)) {
			m &= bh_key_mask(p, 0, p->uid_end, who->uid, 0, p->uid_default);
		} else {
			struct bh_id_key k = {.gen = gen, .policy = policy, .id = who->uid};
			m &= bh_mask(uids.lookup(&k), p->uid_default);
		}
	}
	if (!(m & p->gid_varies)) {
		m &= p->gid_default;
	} else {
		bh_read_ids(who);
		if (!(p->in_maps & BH_DIM_GID)) {
			m &= bh_key_mask(p, p->uid_end, p->gid_end, who->gid, 0, p->gid_default);
		} else {
			struct bh_id_key k = {.gen = gen, .policy = policy, .id = who->gid};
			m &= bh_mask(gids.lookup(&k), p->gid_default);
		}
	}
	if (!(m & p->comm_varies)) {
		m &= p->comm_default;
	} else {
		bh_read_comm(who);
		if (!(p->in_maps & BH_DIM_COMM)) {
			u64 w[2];

			__builtin_memcpy(w, who->comm, BH_COMM_LEN);
			m &= bh_key_mask(p, p->gid_end, p->comm_end, w[0], w[1], p->comm_default);
		} else {
			struct bh_comm_key k = {.gen = gen, .policy = policy};
			__builtin_memcpy(k.comm, who->comm, BH_COMM_LEN);
			m &= bh_mask(comms.lookup(&k), p->comm_default);
		}
	}
	/* Last: the only key that costs more than a helper call to build. */
	if (!(m & p->exe_varies)) {
		m &= p->exe_default;
	} else {
		bh_read_exe(who);
		if (!(p->in_maps & BH_DIM_EXE)) {
			m &= bh_key_mask(p, p->comm_end, p->exe_end, who->exe_ino, who->exe_dev,
					 p->exe_default);
		} else {
			struct bh_exe_key k = {.gen = gen, .policy = policy, .ino = who->exe_ino,
					       .dev = who->exe_dev};
			m &= bh_mask(exes.lookup(&k), p->exe_default);
		}
	}
	return m;
}

/* Count c in the learned map (a learning policy's scope only): the first
 * connection of a key inserts it, the others add to its counters. */
static __always_inline void bh_learn(u32 policy, struct bh_conn *c, struct bh_who *who, u8 verdict)
{
	struct bh_learn_key k = {.policy = policy, .dport = c->dport, .family = c->family,
				 .proto = c->proto};
	struct bh_learn_val init = {}, *v;
	u64 now = bpf_ktime_get_ns();

	bh_read_ids(who);
	bh_read_exe(who);
	k.uid = who->uid;
	k.exe_ino = who->exe_ino;
	k.exe_dev = who->exe_dev;
	__builtin_memcpy(k.daddr, c->daddr, 16);
	v = learned.lookup(&k);
	if (!v) {
		init.first_ns = now;
		learned.insert(&k, &init); /* BPF_NOEXIST: a racing CPU's entry stays */
		v = learned.lookup(&k);
		if (!v) {
			bh_count(BH_G_LEARN_FULL);
			return;
		}
	}
	if (verdict == BH_VERDICT_BLOCKED)
		__sync_fetch_and_add(&v->blocked, 1);
	else if (verdict == BH_VERDICT_WOULD_BLOCK)
		__sync_fetch_and_add(&v->would_block, 1);
	else
		__sync_fetch_and_add(&v->allowed, 1);
	v->last_ns = now;
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

/* Is this message one of a sendmmsg batch? ____sys_sendmsg skips this hook
 * for a message whose name equals the previous one's (sock_sendmsg_nosec),
 * so a later message of the batch could carry ancillary data the programs
 * never see. The syscall is read from the task's saved registers: x86-64
 * (307) and x32 (538) sendmmsg with more than one message, ia32 sendmmsg, and ia32
 * socketcall(SYS_SENDMMSG). Other architectures: doc/THREATS.md. */
#ifdef BH_OFF_PT_REGS_ORIG_AX
static __always_inline int bh_batched(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	void *regs = (void *)bpf_task_pt_regs(task);
	u64 nr = 0, bx = 0, dx = 0;

	if (!regs)
		return 1;
	nr = BH_LOAD(u64, regs, BH_OFF_PT_REGS_ORIG_AX);
	if (nr & 0x40000000ULL) /* __X32_SYSCALL_BIT: x32's sendmmsg is 538 */
		nr = (nr & ~0x40000000ULL) == 538 ? 307 : 0;
	if (nr != 307 && nr != 345 && nr != 102)
		return 0;
	dx = BH_LOAD(u64, regs, BH_OFF_PT_REGS_DX);
	bx = BH_LOAD(u64, regs, BH_OFF_PT_REGS_BX);
	if (nr == 102) /* ia32 socketcall: x86-64 getuid never sends */
		return (u32)bx == 20; /* SYS_SENDMMSG */
	return (u32)dx > 1; /* vlen */
}
#else
static __always_inline int bh_batched(void)
{
	return 0;
}
#endif

/* The verdict on c for the calling process. Processes no policy judges
 * pass; for the others a refusal (c->reason) blocks whatever the rules
 * say, and SCTP is refused unless the policy names it. */
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
	who.cgroup_id = bpf_get_current_cgroup_id();
	p = bh_scope(gen, &who, st->host_mntns, &policy_id);
	if (!p)
		return 0;
	if (c->proto == IPPROTO_SCTP && !(p->flags & BH_POLICY_SCTP))
		c->reason = BH_REASON_SCTP;
	else if (c->reason == BH_REASON_SCTP)
		return 0; /* an SCTP socket where the policy names SCTP */
	if (c->named && !c->reason && bh_batched())
		c->reason = BH_REASON_BATCH;
	/* Judged calls are not counted here (a cold per-CPU slot on every
	 * call, ~0.9 us under TCG): the daemon sums the rules' hits and the
	 * refusals (kernel/counters.py). */

	if (c->reason) {
		block = 1;
		bh_count(BH_G_REFUSED);
	} else {
		m = bh_match(gen, policy_id, p, c, &who);
		if (m) {
			rule = bh_lowest_bit(m);
			block = !((p->allow_bits >> rule) & 1);
		} else {
			block = p->default_action;
		}
	}
	if (block)
		verdict = (p->flags & BH_POLICY_MONITOR) ? BH_VERDICT_WOULD_BLOCK : BH_VERDICT_BLOCKED;

	if (policy_id < BH_MAX_POLICIES && !c->reason) {
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

	if ((p->flags & BH_POLICY_LEARN) && !c->reason)
		bh_learn(policy_id, c, &who, verdict);

	if (verdict != BH_VERDICT_ALLOWED || (p->flags & BH_POLICY_LOG_ALLOWED)) {
		struct bh_event *e;

		bh_read_exe(&who);
		bh_read_ids(&who);
		bh_read_comm(&who);
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
			e->reason = c->reason;
			__builtin_memcpy(e->daddr, c->daddr, 16);
			__builtin_memcpy(e->comm, who.comm, BH_COMM_LEN);
			events.ringbuf_submit(e, 0);
			bh_count(BH_G_EVENTS);
		}
	}
	return verdict == BH_VERDICT_BLOCKED ? -EPERM : 0;
}

/* ---- What the kernel will act on ----------------------------------------
 * Each check below mirrors the kernel function named beside it (Linux 6.1):
 * a form the kernel accepts is judged, a form it refuses is refused here
 * too, and anything the programs cannot read is refused (fail closed). */

/* Constants of uapi headers that bcc's include path does not hold. */
#define BH_SOCK_RAW 3          /* enum sock_type */
#define BH_SOL_IP 0
#define BH_SOL_IPV6 41
#define BH_SOL_SCTP 132
#define BH_SOL_SOCKET 1
#define BH_SO_BROADCAST 6      /* asm-generic/socket.h */
#define BH_IP_OPTIONS 4        /* linux/in.h */
#define BH_IP_FREEBIND 15
#define BH_IP_RETOPTS 7
#define BH_IPV6_2292RTHDR 5    /* linux/in6.h */
#define BH_IPV6_2292PKTOPTIONS 6
#define BH_IPV6_NEXTHOP 9
#define BH_IPV6_RTHDR 57
#define BH_IPV6_FLOWLABEL_MGR 32
#define BH_IPV6_FREEBIND 78
#define BH_SCTP_DSTADDRV4 7    /* enum sctp_cmsg_type */
#define BH_SCTP_DSTADDRV6 8
#define BH_SCTP_PRIMARY_ADDR 6 /* linux/sctp.h */
#define BH_SCTP_SOCKOPT_CONNECTX 110 /* every connectx form passes this one */
#define BH_SCTP_SENDMSG_CONNECT 126
#define BH_SIN6_LEN_RFC2133 24 /* sockaddr_in6 without sin6_scope_id */
#define BH_MAX_CMSGS 8

#define BH_SKIP 0   /* nothing leaves for a destination of its own */
#define BH_JUDGE 1  /* c holds the destination the kernel will use */
#define BH_REFUSE 2 /* c->reason says why */

struct bh_sock {
	u16 family;
	u16 type;
	u16 protocol;
};

/* sk is BTF-typed: a hook's struct sock * or one loaded from a socket. */
static __always_inline void bh_sock_read(void *sk, struct bh_sock *s)
{
	s->family = BH_LOAD(u16, sk, BH_OFF_SOCK_COMMON + BH_OFF_SKC_FAMILY);
	s->type = BH_LOAD(u16, sk, BH_OFF_SOCK_TYPE);
	s->protocol = BH_LOAD(u16, sk, BH_OFF_SOCK_PROTOCOL);
}

/* The protocol a rule names for this socket. A raw socket is "raw" whatever
 * IP protocol it carries (raw_sendmsg ignores the sockaddr's port); MPTCP
 * is TCP to its first peer (mptcp_connect -> tcp_v4/v6_connect). */
static __always_inline u8 bh_rule_proto(struct bh_sock *s)
{
	if (s->type == BH_SOCK_RAW)
		return IPPROTO_RAW;
	if (s->protocol == IPPROTO_MPTCP || s->protocol == 256 /* IPPROTO_SMC, 6.11+ */)
		return IPPROTO_TCP;
	return (u8)s->protocol;
}

/* Only these carry a port; ICMP echo (ping_v4_sendmsg) and raw sockets
 * ignore the sockaddr's, so their destination is judged with port 0. */
static __always_inline int bh_has_ports(u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_UDPLITE ||
	       proto == IPPROTO_SCTP || proto == IPPROTO_DCCP;
}

/* Fill c from a kernel copy of a sockaddr given to connect (connect=1) or
 * as a message's name. For connect the hook's argument is a BTF-typed
 * struct sockaddr (16 bytes): its IPv4 form is read with plain loads; a
 * message's name is a void * and, like the IPv6 tail, read by the helper. */
static __always_inline int bh_parse(struct bh_conn *c, struct bh_sock *s, void *addr, int addrlen,
				    int connect)
{
	u16 family = 0;

	c->family = s->family;
	c->proto = bh_rule_proto(s);
	/* __inet_stream_connect, inet_dgram_connect, udpv6_sendmsg: shorter
	 * than a family is EINVAL. Refused here too: nothing to judge. */
	if (addrlen < (int)sizeof(family)) {
		c->reason = BH_REASON_ADDRESS;
		return BH_REFUSE;
	}
	if (connect)
		family = BH_LOAD(u16, addr, 0);
	else
		bpf_probe_read_kernel(&family, sizeof(family), addr);
	if (family == AF_UNSPEC) {
		/* __inet_stream_connect, inet_dgram_connect: disconnect. */
		if (connect)
			return BH_SKIP;
		/* raw_sendmsg and rawv6_sendmsg take family 0 as their own. */
		if (s->type == BH_SOCK_RAW) {
			family = s->family;
		} else if (s->protocol == IPPROTO_UDP || s->protocol == IPPROTO_UDPLITE) {
			/* udpv6_sendmsg drops the name: the connected peer, judged
			 * at connect. udp_sendmsg reads it as a sockaddr_in. */
			if (s->family == AF_INET6)
				return BH_SKIP;
			family = AF_INET;
		} else {
			c->reason = BH_REASON_ADDRESS;
			return BH_REFUSE;
		}
	}
	if (family == AF_INET) {
		/* tcp_v4_connect, ip4_datagram_connect, udp_sendmsg, raw_sendmsg,
		 * ping_v4_sendmsg: at least a sockaddr_in. An AF_INET6 socket takes
		 * one too (ip6_datagram_connect, udpv6_sendmsg, sctp). */
		struct sockaddr_in sin = {};
		if (addrlen < (int)sizeof(sin)) {
			c->reason = BH_REASON_ADDRESS;
			return BH_REFUSE;
		}
		if (connect) {
			sin.sin_port = BH_LOAD(u16, addr, 2);
			sin.sin_addr.s_addr = BH_LOAD(u32, addr, 4);
		} else {
			bpf_probe_read_kernel(&sin, sizeof(sin), addr);
		}
		c->family = AF_INET;
		c->dport = ntohs(sin.sin_port);
		__builtin_memcpy(c->daddr, &sin.sin_addr.s_addr, 4);
		if (sin.sin_addr.s_addr == 0)
			goto unspecified;
	} else if (family == AF_INET6 && s->family == AF_INET6) {
		/* tcp_v6_connect, __ip6_datagram_connect, udpv6_sendmsg and
		 * rawv6_sendmsg accept SIN6_LEN_RFC2133 bytes: no scope id. */
		struct sockaddr_in6 sin6 = {};
		if (addrlen < BH_SIN6_LEN_RFC2133) {
			c->reason = BH_REASON_ADDRESS;
			return BH_REFUSE;
		}
		bpf_probe_read_kernel(&sin6, BH_SIN6_LEN_RFC2133, addr);
		c->dport = ntohs(sin6.sin6_port);
		u32 *w = (u32 *)sin6.sin6_addr.in6_u.u6_addr32;
		if (w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff)) {
			/* ::ffff:a.b.c.d reaches IPv4 hosts (tcp_v6_connect ->
			 * tcp_v4_connect, udpv6_sendmsg -> udp_sendmsg). */
			c->family = AF_INET;
			__builtin_memcpy(c->daddr, &w[3], 4);
			if (w[3] == 0)
				goto unspecified;
		} else {
			c->family = AF_INET6;
			__builtin_memcpy(c->daddr, sin6.sin6_addr.in6_u.u6_addr8, 16);
			if ((w[0] | w[1] | w[2] | w[3]) == 0)
				goto unspecified;
		}
	} else {
		/* Any other family: EAFNOSUPPORT or EINVAL in the kernel. */
		c->reason = BH_REASON_ADDRESS;
		return BH_REFUSE;
	}
	/* A destination with port 0 is still a destination: a connected UDP
	 * socket sends to it and a Fast Open SYN carries data. */
	if (!bh_has_ports(c->proto))
		c->dport = 0;
	return BH_JUDGE;
unspecified:
	/* 0.0.0.0 and :: mean this host, but which of its addresses depends on
	 * the bound source, IP_PKTINFO, the bound device (__ip_route_output_key,
	 * tcp_v6_connect, udpv6_sendmsg): refused rather than guessed. */
	c->reason = BH_REASON_ADDRESS;
	return BH_REFUSE;
}

static __always_inline int bh_is_inet(struct bh_sock *s)
{
	return s->family == AF_INET || s->family == AF_INET6;
}

/* Fill s from sock's struct sock; whether it is an IPv4/IPv6 socket. */
static __always_inline int bh_inet_sock(struct socket *sock, struct bh_sock *s)
{
	void *sk = BH_LOAD(void *, sock, BH_OFF_SOCKET_SK);

	if (!sk)
		return 0;
	bh_sock_read(sk, s);
	return bh_is_inet(s);
}

LSM_PROBE(socket_connect, struct socket *sock, struct sockaddr *address, int addrlen)
{
	struct bh_conn c = {};
	struct bh_sock s = {};

	if (!bh_inet_sock(sock, &s) || bh_parse(&c, &s, address, addrlen, 1) == BH_SKIP)
		return 0;
	return bh_judge(&c, BH_HOOK_CONNECT);
}

struct bh_cmsghdr {
	u64 len;
	int level;
	int type;
};

/* Ancillary data that sends the message elsewhere than its destination:
 * IPv4 source routes (ip_cmsg_send: IP_RETOPTS -> ip_options_get, then
 * udp_sendmsg routes to opt.faddr), IPv6 routing headers and next hops
 * (ip6_datagram_send_ctl: IPV6_RTHDR, IPV6_2292RTHDR, IPV6_NEXTHOP, then
 * fl6_update_dst), and SCTP's extra destinations (SCTP_DSTADDRV4/V6,
 * sctp_sendmsg_parse), which no hook sees. The walk is for_each_cmsghdr's
 * with CMSG_OK: a header the kernel would reject is refused, and so is
 * ancillary data longer than the programs walk. 0: none of these. */
static __always_inline u8 bh_cmsgs(void *ctl, u64 len)
{
	u64 off = 0;

	for (int i = 0; i < BH_MAX_CMSGS; i++) {
		struct bh_cmsghdr h = {};
		if (off + sizeof(h) > len)
			return 0;
		if (bpf_probe_read_kernel(&h, sizeof(h), ctl + off))
			return BH_REASON_ADDRESS;
		if (h.len < sizeof(h) || h.len > len - off)
			return BH_REASON_ADDRESS;
		if ((h.level == BH_SOL_IP && h.type == BH_IP_RETOPTS) ||
		    (h.level == BH_SOL_IPV6 &&
		     (h.type == BH_IPV6_RTHDR || h.type == BH_IPV6_2292RTHDR ||
		      h.type == BH_IPV6_NEXTHOP)) ||
		    (h.level == BH_SOL_SCTP &&
		     (h.type == BH_SCTP_DSTADDRV4 || h.type == BH_SCTP_DSTADDRV6)))
			return BH_REASON_ROUTING;
		off += (h.len + 7) & ~7ULL;
	}
	return off + sizeof(struct bh_cmsghdr) > len ? 0 : BH_REASON_ADDRESS;
}

/* Messages that name their destination (unconnected UDP, sendmmsg, raw,
 * ping, TCP Fast Open, SCTP) or carry ancillary data. A message without
 * either goes to the connected peer, judged at connect. */
LSM_PROBE(socket_sendmsg, struct socket *sock, struct msghdr *msg, int size)
{
	struct bh_conn c = {};
	struct bh_sock s = {};
	void *name = NULL, *ctl = NULL;
	u64 ctllen = 0;
	int namelen = 0;

	name = BH_LOAD(void *, msg, BH_OFF_MSGHDR_NAME);
	ctllen = BH_LOAD(u64, msg, BH_OFF_MSGHDR_CONTROLLEN);
	if ((!name && !ctllen) || !bh_inet_sock(sock, &s))
		return 0;
	c.family = s.family;
	c.proto = bh_rule_proto(&s);
	if (ctllen) {
		/* ____sys_sendmsg copied it into the kernel before this hook. */
		ctl = BH_LOAD(void *, msg, BH_OFF_MSGHDR_CONTROL);
		c.reason = bh_cmsgs(ctl, ctllen);
	}
	if (!c.reason) {
		/* sendto with a length of 0 leaves a name of no bytes: udp_sendmsg
		 * refuses it, raw_sendmsg sends to the connected peer. */
		namelen = BH_LOAD(int, msg, BH_OFF_MSGHDR_NAMELEN);
		if (!name || namelen == 0 || bh_parse(&c, &s, name, namelen, 0) == BH_SKIP)
			return 0;
		c.named = 1;
	}
	return bh_judge(&c, BH_HOOK_SENDMSG);
}

/* Options that send packets elsewhere than the destination judged, for
 * every later message of the socket (TCP's too): IP_OPTIONS source routes
 * (do_ip_setsockopt -> ip_options_get; ip_queue_xmit and udp_sendmsg route
 * to opt.faddr) and IPv6 routing headers and next hops (do_ipv6_setsockopt:
 * IPV6_RTHDR, IPV6_2292PKTOPTIONS, IPV6_NEXTHOP; then
 * fl6_update_dst), and flow labels, which carry such headers of their own
 * (IPV6_FLOWLABEL_MGR: fl_create parses them with ip6_datagram_send_ctl;
 * udpv6_sendmsg merges them). Then the options that let replies go where
 * the judged destination is not: IP_FREEBIND and IPV6_FREEBIND bind a
 * denied address as the source (inet6_bind), and the kernel's own ICMP
 * errors and echo replies go to it; and SO_BROADCAST (udp_sendmsg,
 * ping_v4_sendmsg refuse broadcasts without it), whose packets reach every
 * host of a network the policy allows, denied ones too. An AF_INET6 socket
 * takes SOL_IP options too. The setsockopt IPV6_2292RTHDR only asks to
 * receive routing headers. */
LSM_PROBE(socket_setsockopt, struct socket *sock, int level, int optname)
{
	struct bh_conn c = {.reason = BH_REASON_ROUTING};
	struct bh_sock s = {};

	if (!((level == BH_SOL_IP && (optname == BH_IP_OPTIONS || optname == BH_IP_FREEBIND)) ||
	      (level == BH_SOL_IPV6 &&
	       (optname == BH_IPV6_RTHDR || optname == BH_IPV6_2292PKTOPTIONS ||
		optname == BH_IPV6_NEXTHOP || optname == BH_IPV6_FLOWLABEL_MGR ||
		optname == BH_IPV6_FREEBIND)) ||
	      (level == BH_SOL_SOCKET && optname == BH_SO_BROADCAST)) ||
	    !bh_inet_sock(sock, &s))
		return 0;
	c.family = s.family;
	c.proto = bh_rule_proto(&s);
	return bh_judge(&c, BH_HOOK_SETSOCKOPT);
}

/* Families whose sockets send to IP addresses through kernel sockets that
 * no hook judges (AF_SMC's TCP fallback, RDS over TCP, RxRPC, PPPoE...) are
 * refused in judged scopes, before their module loads; these remain:
 * AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, and AF_PACKET and AF_KEY, which
 * need CAP_NET_RAW or CAP_NET_ADMIN (out of scope), and AF_ALG (crypto).
 * SCTP reaches addresses no socket hook sees (the peer's advertised ones
 * become paths on their own): its sockets exist in a judged scope only
 * where the policy names the protocol (bh_judge). inet_create takes
 * SOCK_SEQPACKET with protocol 0 as SCTP, the only protocol of that type. */
#define BH_AF_KEY 15
#define BH_AF_NETLINK 16
#define BH_AF_PACKET 17
#define BH_AF_ALG 38
#define BH_SOCK_SEQPACKET 5
LSM_PROBE(socket_create, int family, int type, int protocol, int kern)
{
	struct bh_conn c = {.family = family};

	if (kern || family == AF_UNIX || family == BH_AF_NETLINK || family == BH_AF_PACKET ||
	    family == BH_AF_KEY || family == BH_AF_ALG)
		return 0;
	if (family == AF_INET || family == AF_INET6) {
		if (protocol != IPPROTO_SCTP && !(type == BH_SOCK_SEQPACKET && protocol == 0))
			return 0;
		c.proto = IPPROTO_SCTP;
		c.reason = BH_REASON_SCTP;
	} else {
		c.reason = BH_REASON_FAMILY;
	}
	return bh_judge(&c, BH_HOOK_SOCKET);
}

/* Where a policy names SCTP: the peer addresses that SCTP calls name
 * outside connect and sendmsg's msg_name (security_sctp_bind_connect from
 * sctp_setsockopt_connectx, sctp_sendmsg_new_asoc, sctp_setsockopt_primary_addr).
 * The programs judge one address per call: a packed list of several
 * (connectx with more than one) is refused. Bind calls and
 * SCTP_SET_PEER_PRIMARY_ADDR name local addresses; the peer's ASCONF
 * (SCTP_PARAM_ADD_IP, SCTP_PARAM_SET_PRIMARY) arrives in softirq, where the
 * current task is not the socket's owner: not judged (doc/THREATS.md). */
LSM_PROBE(sctp_bind_connect, struct sock *sk, int optname, struct sockaddr *address, int addrlen)
{
	struct bh_conn c = {};
	struct bh_sock s = {};
	u16 family = 0;
	int one;

	if (optname != BH_SCTP_SOCKOPT_CONNECTX && optname != BH_SCTP_SENDMSG_CONNECT &&
	    optname != BH_SCTP_PRIMARY_ADDR)
		return 0;
	bh_sock_read(sk, &s);
	if (!bh_is_inet(&s))
		return 0;
	family = BH_LOAD(u16, address, 0);
	/* sctp_setsockopt_connectx: addresses packed at af->sockaddr_len each. */
	one = family == AF_INET6 ? (int)sizeof(struct sockaddr_in6) : (int)sizeof(struct sockaddr_in);
	if (addrlen > one || family == AF_UNSPEC) {
		c.family = s.family;
		c.proto = IPPROTO_SCTP;
		c.reason = BH_REASON_ADDRESS;
	} else if (bh_parse(&c, &s, address, addrlen, 1) == BH_SKIP) {
		return 0;
	}
	return bh_judge(&c, BH_HOOK_SCTP);
}

/* A new unit's cgroup gets its policy before any process can run in it, so
 * a unit's first connect is judged even if the daemon has not seen the unit
 * yet: the deepest unit with a policy wins (bh_scope). */
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

/* Only units below undelegated slices are recorded (systemd makes those;
 * no unprivileged process can): a full map is counted, never silent. */
static __always_inline void bh_record(struct bh_scope_key *k, struct bh_scope_val *v)
{
	if (scopes.update(k, v))
		bh_count(BH_G_SCOPE_FULL);
	else
		bh_count(BH_G_SCOPE_NAMED);
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
	/* name is a struct bh_mkdir_name: BH_PATTERN_LEN bytes follow it. */
	if (off >= BH_UNIT_NAME_LEN)
		return 0;
	bpf_probe_read_kernel(tail, sizeof(tail), name + off);
	return bh_starts_with((const char *)tail, p->suffix, slen);
}

/* A new cgroup directly below an undelegated slice is a unit: its name (or
 * a pattern) may give it a policy of its own. Every other cgroup gets no
 * entry: bh_scope finds its unit's by walking up. */
static __always_inline void bh_assign(u32 gen, u64 id, u64 parent, struct bh_unit_key *uk,
				      u32 name_len)
{
	struct bh_scope_key ck = {.gen = gen, .cgroup_id = id};
	struct bh_scope_val *v;

	/* Only directly below an undelegated slice does a name say which unit
	 * a cgroup is; unit names are unique, whichever slice holds the unit. */
	struct bh_scope_key sk = {.gen = gen, .cgroup_id = parent};
	if (!slices.lookup(&sk))
		return;
	/* A new slice directly below a known slice is known too, whether or
	 * not it has a policy of its own: its units are named below it. */
	if (name_len >= 6 && name_len < BH_UNIT_NAME_LEN) {
		char tail[8] = {};
		bpf_probe_read_kernel(tail, 6, uk->name + name_len - 6);
		if (tail[0] == '.' && tail[1] == 's' && tail[2] == 'l' && tail[3] == 'i' &&
		    tail[4] == 'c' && tail[5] == 'e') {
			u32 one = 1;
			sk.cgroup_id = id;
			if (slices.update(&sk, &one))
				bh_count(BH_G_SCOPE_FULL);
		}
	}
	uk->gen = gen;
	uk->parent_id = 0;
	v = unit_names.lookup(uk);
	if (v) {
		struct bh_scope_val copy = *v;
		bh_record(&ck, &copy);
		return;
	}
	for (int i = 0; i < 2 * BH_MAX_PATTERNS; i++) {
		int idx = i;
		struct bh_pattern *p = patterns.lookup(&idx);
		if (!p || p->gen != gen || (p->parent_id && p->parent_id != parent))
			continue;
		if (bh_pattern_match(p, uk->name, name_len)) {
			struct bh_scope_val val = {.policy = p->policy};
			bh_record(&ck, &val);
			return;
		}
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

/* The new cgroup's name, with room after it for bh_pattern_match to read
 * a whole BH_PATTERN_LEN window ending anywhere in the name. */
struct bh_mkdir_name {
	struct bh_unit_key uk;
	char pad[BH_PATTERN_LEN];
};

RAW_TRACEPOINT_PROBE(cgroup_mkdir)
{
	struct bh_mkdir_name n = {};
	u64 id = 0, parent = 0;
	u32 name_len = 0;
	int zero = 0;
	struct bh_state *st = state.lookup(&zero);

	if (!st || !bh_cgroup_ids((void *)ctx->args[0], &id, &parent, n.uk.name, &name_len) ||
	    !parent)
		return 0;
	if (st->active_gen)
		bh_assign(st->active_gen, id, parent, &n.uk, name_len);
	/* A reload in progress writes pending_gen; its cgroup walk may already
	 * have passed this parent. */
	if (st->pending_gen && st->pending_gen != st->active_gen)
		bh_assign(st->pending_gen, id, parent, &n.uk, name_len);
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
