"""The attacker of the bypass suites: every way a process might get bytes to
an address its policy denies, built from raw syscalls so that the kernel,
not Python's socket module, decides what a sockaddr means.

Run as a script (as uid 1000, inside the judged unit), it takes a JSON list
of [attempt, args...] and prints a JSON list with the errno of each (0: the
call succeeded). Each attempt binds its own source port where it can, so a
capture can tell whose packet it saw.
"""

from __future__ import annotations

import ctypes
import errno
import json
import socket
import struct
import sys
from collections.abc import Callable

libc = ctypes.CDLL(None, use_errno=True)
MSG_FASTOPEN = 0x20000000
IPPROTO_UDPLITE = 136
IPPROTO_SCTP = 132
IPV6_RTHDR = 57
IPV6_2292PKTOPTIONS = 6
IP_OPTIONS = 4
SCTP_SOCKOPT_CONNECTX = 110
SCTP_PRIMARY_ADDR = 6


def sin(addr: str, port: int, family: int = socket.AF_INET) -> bytes:
    """A sockaddr_in with any family value (16 bytes)."""
    return struct.pack("<H", family) + struct.pack(">H", port) + socket.inet_aton(addr) + bytes(8)


def sin6(addr: str, port: int, length: int = 28) -> bytes:
    """A sockaddr_in6 cut to `length` bytes (24: without sin6_scope_id)."""
    full = (
        struct.pack("<H", socket.AF_INET6)
        + struct.pack(">HI", port, 0)
        + socket.inet_pton(socket.AF_INET6, addr)
        + bytes(4)
    )
    return full[:length]


def _err(rc: int) -> int:
    return 0 if rc >= 0 else ctypes.get_errno()


def raw_connect(s: socket.socket, name: bytes) -> int:
    buf = ctypes.create_string_buffer(name, len(name))
    return _err(libc.connect(s.fileno(), buf, len(name)))


def raw_sendto(s: socket.socket, name: bytes, flags: int = 0, data: bytes = b"x") -> int:
    buf = ctypes.create_string_buffer(name, max(len(name), 1))
    return _err(libc.sendto(s.fileno(), data, len(data), flags, buf, len(name)))


def raw_setsockopt(s: socket.socket, level: int, opt: int, value: bytes) -> int:
    buf = ctypes.create_string_buffer(value, len(value))
    return _err(libc.setsockopt(s.fileno(), level, opt, buf, len(value)))


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


def cmsg(level: int, kind: int, data: bytes) -> bytes:
    """One cmsghdr with its data, padded to 8 bytes."""
    raw = struct.pack("=QiI", 16 + len(data), level, kind) + data
    return raw + bytes(-len(raw) % 8)


def sendmmsg(s: socket.socket, messages: list[tuple[bytes, bytes]]) -> int:
    """sendmmsg of (name, control) messages; the errno of the call."""
    keep: list[object] = []
    msgs = (_MMsgHdr * len(messages))()
    for i, (name, control) in enumerate(messages):
        nbuf = ctypes.create_string_buffer(name, len(name))
        data = ctypes.create_string_buffer(b"x", 1)
        iov = _IoVec(ctypes.cast(data, ctypes.c_void_p), 1)
        keep += [nbuf, data, iov]
        h = msgs[i].msg_hdr
        h.msg_name = ctypes.cast(nbuf, ctypes.c_void_p)
        h.msg_namelen = len(name)
        h.msg_iov = ctypes.cast(ctypes.pointer(iov), ctypes.c_void_p)
        h.msg_iovlen = 1
        if control:
            cbuf = ctypes.create_string_buffer(control, len(control))
            keep.append(cbuf)
            h.msg_control = ctypes.cast(cbuf, ctypes.c_void_p)
            h.msg_controllen = len(control)
    n = libc.sendmmsg(s.fileno(), msgs, len(messages), 0)
    return 0 if n == len(messages) else (ctypes.get_errno() if n < 0 else -n)


def rthdr2(addr: str) -> bytes:
    """A type 2 routing header (Mobile IPv6, RFC 6275) naming one address: the
    one ip6_datagram_send_ctl and do_ipv6_setsockopt accept unprivileged;
    fl6_update_dst routes the packet to that address."""
    return bytes([0, 2, 2, 1, 0, 0, 0, 0]) + socket.inet_pton(socket.AF_INET6, addr)


def lsrr(addr: str) -> bytes:
    """IPv4 options: a loose source route through addr, padded with NOPs."""
    return bytes([1, 131, 7, 4]) + socket.inet_aton(addr)


def _sock(family: int, kind: int, proto: int = 0, port: int = 0) -> socket.socket:
    s = socket.socket(family, kind, proto)
    s.settimeout(2)
    if port and kind != socket.SOCK_RAW:
        s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    return s


def _try(fn: Callable[[], int]) -> int:
    try:
        return fn()
    except OSError as e:
        return e.errno or -1


# -- the attempts: name -> (args...) -> errno -----------------------------------


def connect(family: int, kind: int, proto: int, name_hex: str, sport: int = 0) -> int:
    """connect() with a sockaddr given byte for byte (non-blocking: a
    connection under way counts as made)."""
    with _sock(family, kind, proto, sport) as s:
        err = raw_connect(s, bytes.fromhex(name_hex))
        return 0 if err == errno.EINPROGRESS else err


def sendto(
    family: int, kind: int, proto: int, name_hex: str, sport: int = 0, flags: int = 0
) -> int:
    with _sock(family, kind, proto, sport) as s:
        return raw_sendto(s, bytes.fromhex(name_hex), flags)


def connect_then_send(family: int, kind: int, proto: int, addr: str, port: int, sport: int) -> int:
    """connect(), then send(): the errno of the first that fails."""
    with _sock(family, kind, proto, sport) as s:
        return _try(lambda: (s.connect((addr, port)), s.send(b"x"))[1] and 0)


def setsockopt_then_send(
    family: int, level: int, opt: int, value_hex: str, addr: str, port: int, sport: int
) -> int:
    """Set an option on a UDP socket, then send to addr: the first errno."""
    with _sock(family, socket.SOCK_DGRAM, 0, sport) as s:
        err = raw_setsockopt(s, level, opt, bytes.fromhex(value_hex))
        return err or _try(lambda: s.sendto(b"x", (addr, port)) and 0)


def sendmsg_cmsg(
    family: int, level: int, kind: int, data_hex: str, addr: str, port: int, sport: int
) -> int:
    """sendmsg to addr with one ancillary item."""
    with _sock(family, socket.SOCK_DGRAM, 0, sport) as s:
        anc = [(level, kind, bytes.fromhex(data_hex))]
        return _try(lambda: s.sendmsg([b"x"], anc, 0, (addr, port)) and 0)


def sendmmsg_batch(family: int, names_hex: list[str], control_hex: list[str], sport: int) -> int:
    with _sock(family, socket.SOCK_DGRAM, 0, sport) as s:
        msgs = [(bytes.fromhex(n), bytes.fromhex(c)) for n, c in zip(names_hex, control_hex)]
        return sendmmsg(s, msgs)


def socket_create(family: int, kind: int, proto: int) -> int:
    return _try(lambda: socket.socket(family, kind, proto).close() or 0)


def sctp_connectx(family: int, addrs_hex: str) -> int:
    """setsockopt(SCTP_SOCKOPT_CONNECTX) with packed addresses."""
    try:
        s = socket.socket(family, socket.SOCK_STREAM, IPPROTO_SCTP)
    except OSError as e:
        return 1000 + (e.errno or 0)  # could not even make the socket
    with s:
        s.setblocking(False)
        err = raw_setsockopt(s, IPPROTO_SCTP, SCTP_SOCKOPT_CONNECTX, bytes.fromhex(addrs_hex))
        return 0 if err in (0, errno.EINPROGRESS) else err


def ping(family: int, addr: str) -> int:
    """An ICMP echo request from an unprivileged ping socket."""
    proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
    kind = 8 if family == socket.AF_INET else 128
    with _sock(family, socket.SOCK_DGRAM, proto) as s:
        return _try(lambda: s.sendto(bytes([kind, 0, 0, 0, 0, 0, 0, 1]), (addr, 0)) and 0)


ATTEMPTS: dict[str, Callable[..., int]] = {
    f.__name__: f
    for f in (
        connect,
        sendto,
        connect_then_send,
        setsockopt_then_send,
        sendmsg_cmsg,
        sendmmsg_batch,
        socket_create,
        sctp_connectx,
        ping,
    )
}


def main() -> None:
    out = []
    for name, *args in json.loads(sys.argv[1]):
        try:
            out.append(ATTEMPTS[name](*args))
        except Exception as e:  # report, never die: the test reads one answer each
            print(f"attacker: {name}{tuple(args)}: {e!r}", file=sys.stderr)
            out.append(-1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
