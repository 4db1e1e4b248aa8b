"""names/resolver.py against a real DNS server on loopback: DnsStub, a small
responder built on dnspython's message API, so TTLs, CNAME chains, NXDOMAIN
and failures are exact. The lab suite (tests/vm/guest/test_names.py) uses
the same stub as the guest's resolver."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from bouheki.names.resolver import NameResolver, ResolveError


class DnsStub:
    """Answers A, AAAA and CNAME queries from `records` over UDP.

    records: (name, type) -> (ttl, [values]); names lower case, no final dot.
    chase: put the CNAME targets' records in the same response, as a
        recursive resolver does; False answers one CNAME per query.
    mode: "ok", "servfail" (every query fails) or "drop" (no reply: timeouts).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.records: dict[tuple[str, str], tuple[int, list[str]]] = {}
        self.chase = True
        self.mode = "ok"
        self.soa_minimum = 7
        self.queries: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = self.sock.getsockname()[:2]
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def set(self, name: str, rdtype: str, ttl: int, *values: str) -> None:
        with self._lock:
            self.records[(name, rdtype)] = (ttl, list(values))

    def remove(self, name: str, rdtype: str) -> None:
        with self._lock:
            self.records.pop((name, rdtype), None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except (socket.timeout, OSError):
                continue
            try:
                query = dns.message.from_wire(data)
            except Exception:
                continue
            reply = self.answer(query)
            if reply is not None:
                self.sock.sendto(reply.to_wire(), peer)

    def answer(self, query: dns.message.Message) -> dns.message.Message | None:
        q = query.question[0]
        name = q.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(q.rdtype)
        with self._lock:
            self.queries.append((name, rdtype))
            mode, records = self.mode, dict(self.records)
        if mode == "drop":
            return None
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.AA | dns.flags.RA
        if mode == "servfail":
            reply.set_rcode(dns.rcode.SERVFAIL)
            return reply
        current = name
        for _ in range(16):
            if (current, rdtype) in records:
                ttl, values = records[(current, rdtype)]
                reply.answer.append(dns.rrset.from_text(current + ".", ttl, "IN", rdtype, *values))
                return reply
            if (current, "CNAME") in records:
                ttl, (target,) = records[(current, "CNAME")]
                reply.answer.append(dns.rrset.from_text(current + ".", ttl, "IN", "CNAME",
                                                        target + "."))  # fmt: skip
                current = target
                if self.chase:
                    continue
                return reply
            break
        # No data for this name (NODATA), or no such name at all (NXDOMAIN).
        if not any(n == current for n, _ in records):
            reply.set_rcode(dns.rcode.NXDOMAIN)
        zone = current.split(".", 1)[-1] + "."
        soa = f"ns.{zone} admin.{zone} 1 60 60 60 {self.soa_minimum}"
        reply.authority.append(dns.rrset.from_text(zone, 3600, "IN", "SOA", soa))
        return reply


@pytest.fixture
def stub() -> Iterator[DnsStub]:
    s = DnsStub()
    yield s
    s.close()


def resolver_for(stub: DnsStub, **kw: float) -> NameResolver:
    return NameResolver(nameservers=[stub.host], port=stub.port, **kw)  # type: ignore[arg-type]


def recs(pairs: object) -> set[tuple[str, int]]:
    return {(str(a), t) for a, t in pairs}  # type: ignore[attr-defined]


def test_several_a_and_aaaa_with_their_ttls(stub: DnsStub) -> None:
    stub.set("multi.bh.test", "A", 30, "10.0.1.1", "10.0.1.71")
    stub.set("multi.bh.test", "AAAA", 45, "2001:db8::1", "2001:db8::71")
    r = resolver_for(stub).resolve("multi.bh.test")
    assert recs(r.records) == {
        ("10.0.1.1", 30), ("10.0.1.71", 30), ("2001:db8::1", 45), ("2001:db8::71", 45),
    }  # fmt: skip
    assert r.errors == ()
    assert all(isinstance(a, (ipaddress.IPv4Address, ipaddress.IPv6Address)) for a, _ in r.records)


def test_cname_chain_in_one_response_takes_the_shortest_ttl(stub: DnsStub) -> None:
    stub.set("www.bh.test", "CNAME", 5, "edge.bh.test")
    stub.set("edge.bh.test", "CNAME", 100, "host.bh.test")
    stub.set("host.bh.test", "A", 60, "10.0.1.71")
    r = resolver_for(stub).resolve("www.bh.test")
    assert recs(r.records) == {("10.0.1.71", 5)}


def test_cname_chain_the_server_leaves_unfinished_is_followed(stub: DnsStub) -> None:
    stub.chase = False
    stub.set("www.bh.test", "CNAME", 50, "edge.bh.test")
    stub.set("edge.bh.test", "CNAME", 40, "host.bh.test")
    stub.set("host.bh.test", "A", 60, "10.0.1.71")
    stub.set("host.bh.test", "AAAA", 30, "2001:db8::71")
    r = resolver_for(stub).resolve("www.bh.test")
    assert recs(r.records) == {("10.0.1.71", 40), ("2001:db8::71", 30)}
    assert ("host.bh.test", "A") in stub.queries


def test_cname_loop_is_an_error(stub: DnsStub) -> None:
    stub.chase = False
    stub.set("a.bh.test", "CNAME", 50, "b.bh.test")
    stub.set("b.bh.test", "CNAME", 50, "a.bh.test")
    with pytest.raises(ResolveError, match="CNAME loop"):
        resolver_for(stub).resolve("a.bh.test")


def test_nxdomain_is_an_empty_answer_with_the_soa_negative_ttl(stub: DnsStub) -> None:
    stub.soa_minimum = 12
    r = resolver_for(stub).resolve("nothing.bh.test")
    assert r.records == () and r.errors == ()
    assert r.negative_ttl == 12


def test_only_a_records_is_fine(stub: DnsStub) -> None:
    stub.set("v4.bh.test", "A", 30, "10.0.1.1")
    r = resolver_for(stub).resolve("v4.bh.test")
    assert recs(r.records) == {("10.0.1.1", 30)}
    assert r.errors == ()


def test_servfail_and_timeouts_raise(stub: DnsStub) -> None:
    stub.set("x.bh.test", "A", 30, "10.0.1.1")
    stub.mode = "servfail"
    with pytest.raises(ResolveError):
        resolver_for(stub).resolve("x.bh.test")
    stub.mode = "drop"
    with pytest.raises(ResolveError, match=r"timed out|answered"):
        resolver_for(stub, timeout=0.2, lifetime=0.4).resolve("x.bh.test")


def test_names_are_fully_qualified_not_searched(stub: DnsStub) -> None:
    stub.set("host", "A", 30, "10.0.1.1")
    stub.set("host.example", "A", 30, "10.0.1.2")
    r = resolver_for(stub).resolve("host")
    assert recs(r.records) == {("10.0.1.1", 30)}


def test_resolv_conf_is_reread_when_it_changes(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    r = NameResolver(resolv_conf=str(conf), timeout=0.2, lifetime=0.4)
    with pytest.raises(ResolveError, match="cannot read"):
        r.resolve("x.bh.test")
    conf.write_text("# nothing here\n")
    with pytest.raises(ResolveError, match="no nameserver"):
        r.resolve("x.bh.test")
    # resolv.conf has no port: the stub must be on 53 of some loopback address.
    try:
        stub = DnsStub("127.0.0.58", 53)
    except OSError as e:
        pytest.skip(f"cannot listen on 127.0.0.58:53: {e}")
    try:
        stub.set("x.bh.test", "A", 30, "10.0.1.1")
        conf.write_text("nameserver 127.0.0.58\n")
        assert recs(r.resolve("x.bh.test").records) == {("10.0.1.1", 30)}
    finally:
        stub.close()
