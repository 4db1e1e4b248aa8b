"""The daemon's settings (the [daemon] table of bouheki.toml; config/settings.py
reads them), as the layers that act on them see them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DaemonSettings:
    # Emit events (journal) for allowed connections too, not only blocks.
    log_allowed: bool = False
    # At most this many events per unit per interval reach the journal; the
    # rest are counted and reported as suppressed. 0: no limit.
    event_rate_limit: int = 100
    event_rate_interval: float = 10.0  # seconds
    # Domain names: an answer's TTL is clamped to [dns_min_ttl, dns_max_ttl];
    # an address that left the answers stays allowed/denied for dns_grace
    # seconds more, for connections that resolved it just before.
    dns_min_ttl: int = 30
    dns_max_ttl: int = 3600
    dns_grace: int = 300
    # Bounds what one name can add to the kernel tables.
    max_addresses_per_name: int = 64
