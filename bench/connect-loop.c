/* The benchmark's connect loops, built static on the host (the lab guest has
 * no compiler) by bench/run into build/bench/connect-loop.
 *
 *   connect-loop client ADDR N PORT...   for each PORT: 100 untimed connects,
 *                                        then N timed ones; one JSON line with
 *                                        the wall and CPU time of the N
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

static int client(int argc, char **argv, int sync)
{
	long n;
	char buf[64];

	if (sync) {
		printf("ready\n");
		fflush(stdout);
		if (!fgets(buf, sizeof(buf), stdin))
			return 1;
	}

	if (argc < 5)
		return 2;
	n = atol(argv[3]);
	printf("{\"n\": %ld, \"runs\": [", n);
	for (int i = 4; i < argc; i++) {
		struct sockaddr_in sa = addr_of(argv[2], argv[i]);
		struct tally warm = {0}, t = {0};
		long long t0, t1, c0, c1;

		for (int k = 0; k < 100; k++)
			one(&sa, &warm);
		c0 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
		t0 = now_ns();
		for (long k = 0; k < n; k++)
			one(&sa, &t);
		t1 = now_ns();
		c1 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
		printf("%s{\"port\": %s, \"ns\": %lld, \"cpu_ns\": %lld, \"ok\": %ld, "
		       "\"refused\": %ld, \"eperm\": %ld, \"other\": %ld, \"errno\": %d}",
		       i > 4 ? ", " : "", argv[i], t1 - t0, c1 - c0, t.ok, t.refused, t.eperm,
		       t.other, t.last_errno);
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
