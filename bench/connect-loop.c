/* The benchmark's connect loops, built static on the host (the lab guest has
 * no compiler) by bench/run into build/bench/connect-loop.
 *
 *   connect-loop client ADDR N PORT...   for each PORT: 100 untimed connects,
 *                                        then N timed ones in 5 chunks that
 *                                        alternate between the ports; one JSON
 *                                        line with the wall and CPU time of
 *                                        each chunk
 *   connect-loop client-sync ...         the same, but says "ready", waits for a
 *                                        line on stdin before it starts (the
 *                                        caller waits for systemd to settle
 *                                        after starting the unit), and waits
 *                                        for EOF on stdin before it exits (the
 *                                        caller reads the BPF statistics of
 *                                        programs that live as long as the unit)
 *   connect-loop serve PORT              accept and close on 127.0.0.1:PORT
 *   connect-loop flood ADDR PORT SECONDS connect in a loop for SECONDS
 *
 * Each connect is socket() + connect() + close(). A connected socket is
 * closed with SO_LINGER 0 (an RST, no TIME_WAIT), so tens of thousands of
 * connects never run out of ephemeral ports. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct tally {
	long ok, refused, eperm, other;
	int last_errno;
};

static long long clock_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long now_ns(void)
{
	return clock_ns(CLOCK_MONOTONIC);
}

static void one(const struct sockaddr_in *sa, struct tally *t)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		perror("socket");
		exit(2);
	}
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0) {
		struct linger lg = {.l_onoff = 1, .l_linger = 0};
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		t->ok++;
	} else if (errno == ECONNREFUSED) {
		t->refused++;
	} else if (errno == EPERM) {
		t->eperm++;
	} else {
		t->other++;
		t->last_errno = errno;
	}
	close(fd);
}

static struct sockaddr_in addr_of(const char *ip, const char *port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(port))};

	if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1) {
		fprintf(stderr, "bad address %s\n", ip);
		exit(2);
	}
	return sa;
}

#define CHUNKS 5
#define MAX_PORTS 8

struct port_run {
	struct sockaddr_in sa;
	struct tally t;
	long long ns[CHUNKS], cpu[CHUNKS];
};

static void print_list(const char *name, const long long *v)
{
	printf(", \"%s\": [", name);
	for (int c = 0; c < CHUNKS; c++)
		printf("%s%lld", c ? ", " : "", v[c]);
	printf("]");
}

/* N connects per port, in CHUNKS chunks that alternate between the ports,
 * so that a burst of the host's contention lands in one chunk of one port
 * and the median chunk leaves it out. */
static int client(int argc, char **argv, int sync)
{
	struct port_run runs[MAX_PORTS] = {0};
	int nports = argc - 4;
	long n, per;
	char buf[64];

	if (argc < 5 || nports > MAX_PORTS)
		return 2;
	n = atol(argv[3]);
	per = n / CHUNKS;
	for (int p = 0; p < nports; p++)
		runs[p].sa = addr_of(argv[2], argv[4 + p]);
	if (sync) {
		printf("ready\n");
		fflush(stdout);
		if (!fgets(buf, sizeof(buf), stdin))
			return 1;
	}
	for (int p = 0; p < nports; p++) {
		struct tally warm = {0};
		for (int k = 0; k < 100; k++)
			one(&runs[p].sa, &warm);
	}
	for (int c = 0; c < CHUNKS; c++) {
		for (int p = 0; p < nports; p++) {
			long long t0, c0;

			c0 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
			t0 = now_ns();
			for (long k = 0; k < per; k++)
				one(&runs[p].sa, &runs[p].t);
			runs[p].ns[c] = now_ns() - t0;
			runs[p].cpu[c] = clock_ns(CLOCK_PROCESS_CPUTIME_ID) - c0;
		}
	}
	printf("{\"n\": %ld, \"chunks\": %d, \"runs\": [", per * CHUNKS, CHUNKS);
	for (int p = 0; p < nports; p++) {
		struct port_run *r = &runs[p];
		long long ns = 0, cpu = 0;

		for (int c = 0; c < CHUNKS; c++) {
			ns += r->ns[c];
			cpu += r->cpu[c];
		}
		printf("%s{\"port\": %s, \"ns\": %lld, \"cpu_ns\": %lld, \"ok\": %ld, "
		       "\"refused\": %ld, \"eperm\": %ld, \"other\": %ld, \"errno\": %d",
		       p ? ", " : "", argv[4 + p], ns, cpu, r->t.ok, r->t.refused, r->t.eperm,
		       r->t.other, r->t.last_errno);
		print_list("chunk_ns", r->ns);
		print_list("chunk_cpu_ns", r->cpu);
		printf("}");
	}
	printf("]}\n");
	fflush(stdout);
	while (sync && fgets(buf, sizeof(buf), stdin))
		;
	return 0;
}

static int serve(int argc, char **argv)
{
	struct sockaddr_in sa;
	int one_ = 1, lfd;

	if (argc < 3)
		return 2;
	sa = addr_of("127.0.0.1", argv[2]);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one_, sizeof(one_));
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 4096) < 0) {
		perror("listen");
		return 1;
	}
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			close(fd);
	}
}

static int flood(int argc, char **argv)
{
	struct sockaddr_in sa;
	struct tally t = {0};
	long long t0, end;

	if (argc < 5)
		return 2;
	sa = addr_of(argv[2], argv[3]);
	t0 = now_ns();
	end = t0 + (long long)(atof(argv[4]) * 1e9);
	do {
		for (int k = 0; k < 64; k++)
			one(&sa, &t);
	} while (now_ns() < end);
	printf("{\"attempts\": %ld, \"ns\": %lld, \"ok\": %ld, \"refused\": %ld, \"eperm\": %ld, "
	       "\"other\": %ld, \"errno\": %d}\n",
	       t.ok + t.refused + t.eperm + t.other, now_ns() - t0, t.ok, t.refused, t.eperm,
	       t.other, t.last_errno);
	return 0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc >= 2 && !strcmp(argv[1], "client"))
		return client(argc, argv, 0);
	if (argc >= 2 && !strcmp(argv[1], "client-sync"))
		return client(argc, argv, 1);
	if (argc >= 2 && !strcmp(argv[1], "serve"))
		return serve(argc, argv);
	if (argc >= 2 && !strcmp(argv[1], "flood"))
		return flood(argc, argv);
	fprintf(stderr, "usage: connect-loop client|client-sync ADDR N PORT... | serve PORT | "
			"flood ADDR PORT SECONDS\n");
	return 2;
}
