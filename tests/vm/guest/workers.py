"""Long-lived forked processes with a chosen identity (comm, uid, gid) that
make connections on request, so a test can try thousands of connections from
many identities without paying a fork per connection."""

from __future__ import annotations

import json
import os
import socket

from labkit import set_comm


class Worker:
    def __init__(self, comm: str, uid: int, gid: int) -> None:
        self.comm, self.uid, self.gid = comm, uid, gid
        req_r, self._req_w = os.pipe()
        self._resp_r, resp_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                os.close(self._req_w)
                os.close(self._resp_r)
                os.setgroups([])
                os.setresgid(gid, gid, gid)
                os.setresuid(uid, uid, uid)
                set_comm(comm)
                _serve(os.fdopen(req_r, "r"), os.fdopen(resp_w, "w"))
            finally:
                os._exit(0)
        os.close(req_r)
        os.close(resp_w)
        self.pid = pid
        self._w = os.fdopen(self._req_w, "w")
        self._r = os.fdopen(self._resp_r, "r")

    def attempt(self, family: int, addr: str, port: int, proto: int, via: str = "connect") -> int:
        self._w.write(json.dumps([family, addr, port, proto, via]) + "\n")
        self._w.flush()
        return int(self._r.readline())

    def close(self) -> None:
        self._w.close()
        os.waitpid(self.pid, 0)


def attempt(family: int, addr: str, port: int, proto: int, via: str) -> int:
    """0 on success, else the errno."""
    kind = socket.SOCK_STREAM if proto == socket.IPPROTO_TCP else socket.SOCK_DGRAM
    s = socket.socket(family, kind)
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


def _serve(r, w) -> None:  # pragma: no cover - child
    for line in r:
        family, addr, port, proto, via = json.loads(line)
        w.write(f"{attempt(family, addr, port, proto, via)}\n")
        w.flush()
