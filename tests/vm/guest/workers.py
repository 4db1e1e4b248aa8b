"""Long-lived processes with a chosen identity (comm, uid, gid) that make
connections on request, so a test can try thousands of connections from
many identities without paying a process start per connection.

Run as a script, this file is the worker: it reads one JSON request per line
on stdin and answers with the errno (0: success) on stdout."""

from __future__ import annotations

import ctypes
import json
import socket
import subprocess
import sys


class Worker:
    def __init__(self, comm: str, uid: int, gid: int) -> None:
        self.comm, self.uid, self.gid = comm, uid, gid
        self.proc = subprocess.Popen(
            [sys.executable, __file__, comm],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            user=uid,
            group=gid,
            extra_groups=[],
        )

    def attempt(self, family: int, addr: str, port: int, proto: int, via: str = "connect") -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps([family, addr, port, proto, via]) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.comm}/{self.uid} died: {self.proc.wait()}")
        return int(line)

    def attempt_many(self, requests: list[tuple[int, str, int, int, str]]) -> list[int]:
        """One round trip for many attempts, made in order."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("".join(json.dumps(list(r)) + "\n" for r in requests))
        self.proc.stdin.flush()
        out = []
        for _ in requests:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"worker {self.comm}/{self.uid} died: {self.proc.wait()}")
            out.append(int(line))
        return out

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def attempt(family: int, addr: str, port: int, proto: int, via: str) -> int:
    """0 on success, else the errno. proto: TCP, UDP, UDP-Lite or an ICMP
    ping socket (a datagram socket of that protocol)."""
    kind = socket.SOCK_STREAM if proto == socket.IPPROTO_TCP else socket.SOCK_DGRAM
    s = socket.socket(family, kind, proto)
    s.settimeout(2)
    try:
        if via == "sendto":
            s.sendto(b"x", (addr, port))
        else:
            s.connect((addr, port))
        return 0
    except OSError as e:
        return e.errno or -1
    finally:
        s.close()


def main() -> None:
    ctypes.CDLL(None).prctl(15, sys.argv[1].encode()[:15], 0, 0, 0)  # PR_SET_NAME
    for line in sys.stdin:
        try:
            result = attempt(*json.loads(line))
        except Exception as e:  # answer, never die: the parent waits for a line
            print(f"worker: {e!r}", file=sys.stderr)
            result = -1
        print(result, flush=True)


if __name__ == "__main__":
    main()
