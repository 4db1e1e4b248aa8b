"""A name's A and AAAA records with their TTLs, from the system's resolvers.

dnspython, not getaddrinfo(): the policy must follow each record's TTL, and
getaddrinfo() does not report one. Blocking: the caller runs it in a thread.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from .cache import IPAddress

# dnspython is imported where it is used: dns.resolver pulls in its DoH
# clients (httpx, rich...), most of the daemon's import time before READY=1,
# for a policy that may name no host at all.
if TYPE_CHECKING:
    import dns.message
    import dns.resolver

RESOLV_CONF = "/etc/resolv.conf"
# A CNAME chain longer than this is a loop or a misconfiguration.
MAX_CNAME_HOPS = 8


class ResolveError(Exception):
    """No usable answer (timeout, SERVFAIL, no resolver configured): the
    caller keeps what it had and logs this message."""


@dataclass(frozen=True)
class Resolution:
    """What a name resolves to now.

    records: (address, TTL) with CNAMEs followed; the TTL is the shortest
        along the chain (a CNAME that expires sooner ends the answer sooner).
    negative_ttl: when there are no records, how long that may be believed
        (the zone's SOA minimum), 0 if the server did not say.
    errors: the record types that failed while the other one answered
        (a partial answer); empty when both answered.
    """

    name: str
    records: tuple[tuple[IPAddress, int], ...] = ()
    negative_ttl: int = 0
    errors: tuple[str, ...] = ()


def _soa_ttl(response: Optional[dns.message.Message]) -> int:
    import dns.rdatatype

    if response is None:
        return 0
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return int(min(rrset.ttl, rrset[0].minimum))
    return 0


class NameResolver:
    """Queries A and AAAA through the resolvers of /etc/resolv.conf (re-read
    when the file changes), or through `nameservers`:`port` when given."""

    def __init__(
        self,
        nameservers: Optional[Sequence[str]] = None,
        port: int = 53,
        timeout: float = 2.0,
        lifetime: float = 5.0,
        resolv_conf: str = RESOLV_CONF,
    ) -> None:
        self.nameservers = list(nameservers) if nameservers else None
        self.port = port
        self.timeout = timeout
        self.lifetime = lifetime
        self.resolv_conf = resolv_conf
        self._lock = threading.Lock()
        self._resolver: Optional[dns.resolver.Resolver] = None
        self._conf_id: Optional[tuple[int, int, int, int]] = None

    def _current(self) -> dns.resolver.Resolver:
        """The resolver for the current configuration: resolv.conf may be
        written after the daemon started (DHCP, NetworkManager)."""
        import dns.resolver

        with self._lock:
            if self.nameservers is not None:
                if self._resolver is None:
                    r = dns.resolver.Resolver(configure=False)
                    r.nameservers = list(self.nameservers)
                    r.port = self.port
                    self._resolver = self._tune(r)
                return self._resolver
            try:
                st = os.stat(self.resolv_conf)
                conf_id = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
            except OSError as e:
                raise ResolveError(f"cannot read {self.resolv_conf}: {e.strerror}") from e
            if self._resolver is None or conf_id != self._conf_id:
                try:
                    r = dns.resolver.Resolver(filename=self.resolv_conf)
                except dns.resolver.NoResolverConfiguration as e:
                    raise ResolveError(f"no nameserver in {self.resolv_conf}") from e
                # The policy names are fully qualified: no search list.
                r.use_search_by_default = False
                self._resolver = self._tune(r)
                self._conf_id = conf_id
            return self._resolver

    def _tune(self, r: dns.resolver.Resolver) -> dns.resolver.Resolver:
        r.timeout = self.timeout
        r.lifetime = self.lifetime
        r.cache = None  # the daemon keeps its own cache with its own rules
        return r

    def resolve(self, name: str) -> Resolution:
        """A and AAAA of `name`. Raises ResolveError if neither answered."""
        resolver = self._current()
        records: list[tuple[IPAddress, int]] = []
        negative: list[int] = []
        errors: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                got, neg = self._query(resolver, name, rdtype)
            except ResolveError as e:
                errors.append(f"{rdtype}: {e}")
                continue
            records += got
            if neg is not None:
                negative.append(neg)
        if len(errors) == 2:
            raise ResolveError("; ".join(errors))
        return Resolution(
            name=name,
            records=tuple(records),
            negative_ttl=min(negative) if negative else 0,
            errors=tuple(errors),
        )

    def _query(
        self, resolver: dns.resolver.Resolver, name: str, rdtype: str
    ) -> tuple[list[tuple[IPAddress, int]], Optional[int]]:
        """(records, negative TTL or None when there are records)."""
        import dns.exception
        import dns.name
        import dns.resolver

        qname = dns.name.from_text(name)
        seen = {qname}
        chain_ttl: Optional[int] = None
        for _ in range(MAX_CNAME_HOPS):
            try:
                answer = resolver.resolve(qname, rdtype, raise_on_no_answer=False, search=False)
            except dns.resolver.NXDOMAIN as e:
                responses = list(e.kwargs.get("responses", {}).values())
                neg = _soa_ttl(responses[0] if responses else None)
                return [], neg if chain_ttl is None else min(neg, chain_ttl)
            except dns.resolver.NoNameservers as e:
                raise ResolveError(f"no nameserver answered: {e}") from e
            except dns.exception.Timeout as e:
                raise ResolveError(f"timed out: {e}") from e
            except dns.exception.DNSException as e:
                raise ResolveError(f"{type(e).__name__}: {e}") from e
            # dnspython follows the CNAMEs present in the response; its
            # minimum_ttl covers them and the final RRset.
            ttl = answer.chaining_result.minimum_ttl
            chain_ttl = ttl if chain_ttl is None else min(chain_ttl, ttl)
            if answer.rrset is not None:
                records = [(ipaddress.ip_address(rd.address), chain_ttl) for rd in answer.rrset]
                return records, None
            target = answer.canonical_name
            if target in seen:
                if target == qname and not answer.chaining_result.cnames:
                    # Nothing of this type (NOERROR, no data).
                    neg = _soa_ttl(answer.response)
                    return [], neg if len(seen) == 1 else min(neg, chain_ttl)
                raise ResolveError(f"CNAME loop at {target}")
            # A chain the server did not finish (an authoritative server whose
            # zone does not hold the target): ask for the target ourselves.
            seen.add(target)
            qname = target
        raise ResolveError(f"CNAME chain longer than {MAX_CNAME_HOPS}")
