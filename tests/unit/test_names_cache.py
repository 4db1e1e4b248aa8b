"""The TTL cache of domain names (names/cache.py), on a fake clock."""

from __future__ import annotations

import ipaddress
import logging

import pytest

from bouheki.names.cache import MIN_INTERVAL, RETRY_MAX, Limits, NameCache

A1, A2, A3 = (ipaddress.ip_address(f"192.0.2.{i}") for i in (1, 2, 3))
V6 = ipaddress.ip_address("2001:db8::1")
N = "api.example.com"


def cache(**kw: float) -> NameCache:
    base = {"min_ttl": 10, "max_ttl": 100, "grace": 5, "max_addresses": 64}
    base.update(kw)
    return NameCache(Limits(**base))  # type: ignore[arg-type]


def test_ttl_is_clamped_to_min_and_max() -> None:
    c = cache()
    c.observe(N, [(A1, 1), (A2, 50), (A3, 10_000)], now=1000)
    assert c.addresses(N) == {A1: 1010, A2: 1050, A3: 1100}
    # Re-resolved when the shortest (clamped) TTL runs out.
    assert c.next_deadline() == 1010
    assert c.due(1009.9) == []
    assert c.due(1010) == [N]


def test_zero_ttl_and_zero_min_still_wait_a_floor_interval() -> None:
    c = cache(min_ttl=0)
    c.observe(N, [(A1, 0)], now=0)
    assert c.addresses(N) == {A1: MIN_INTERVAL}


def test_unseen_address_is_removed_after_ttl_plus_grace() -> None:
    c = cache()
    assert c.observe(N, [(A1, 10)], now=0)
    # The record changed: A2 now, A1 no longer in the answer.
    assert c.observe(N, [(A2, 10)], now=10)
    assert set(c.addresses(N)) == {A1, A2}
    assert c.next_deadline() == 15  # A1's TTL (10) + grace (5)
    assert c.expire(14.9) == set()
    assert c.expire(15) == {N}
    assert set(c.addresses(N)) == {A2}


def test_reseen_address_is_extended_never_shortened() -> None:
    c = cache()
    c.observe(N, [(A1, 60)], now=0)
    assert not c.observe(N, [(A1, 60)], now=30)  # same addresses: no change
    assert c.addresses(N) == {A1: 90}
    # A shorter TTL later does not cut what a client may still have cached.
    c.observe(N, [(A1, 10)], now=40)
    assert c.addresses(N) == {A1: 90}
    assert c.expire(94) == set()
    assert c.expire(95) == {N}


def test_failure_keeps_addresses_until_they_expire_and_retries_with_backoff() -> None:
    c = cache()
    c.observe(N, [(A1, 10)], now=0)
    assert c.failed(N, now=10, error="timed out")  # first of a streak: log it
    assert set(c.addresses(N)) == {A1}
    assert c.due(10) == []
    assert c.due(11) == [N]  # retry after 1 s
    assert not c.failed(N, now=11, error="timed out")  # a repeat: not logged again
    assert c.due(12.9) == [] and c.due(13) == [N]  # then 2 s
    assert c.failed(N, now=13, error="SERVFAIL")  # a different error: logged
    assert c.expire(14.9) == set()
    assert c.expire(15) == {N}  # TTL + grace, as for a changed record
    assert c.addresses(N) == {}
    # Each retry at its deadline: the interval doubles up to RETRY_MAX.
    intervals = []
    for _ in range(10):
        now = c.next_deadline()
        assert now is not None
        c.failed(N, now=now, error="SERVFAIL")
        intervals.append(c.next_deadline() - now)  # type: ignore[operator]
    assert intervals == [8, 16, 32, 60, 60, 60, 60, 60, 60, 60]
    assert max(intervals) == RETRY_MAX
    # An answer ends the streak.
    c.observe(N, [(A1, 10)], now=200)
    assert c.failures(N) == 0


def test_partial_answer_schedules_the_retry_first() -> None:
    c = cache()
    c.observe(N, [(A1, 50)], now=0)  # A answered, AAAA timed out
    c.failed(N, now=0, error="AAAA: timed out")
    assert c.due(1) == [N]


def test_empty_answer_is_an_answer_with_its_negative_ttl() -> None:
    c = cache()
    assert not c.observe(N, [], now=0, negative_ttl=20)
    assert c.addresses(N) == {}
    assert c.needs_answer(N)  # no address: a reload asks again
    assert c.due(19) == [] and c.due(20) == [N]
    c.observe(N, [], now=0, negative_ttl=0)
    assert c.due(10) == [N]  # clamped to min_ttl


def test_a_and_aaaa_are_kept_together() -> None:
    c = cache()
    c.observe(N, [(A1, 30), (V6, 20)], now=0)
    nets = c.networks()[N]
    assert [str(n) for n in nets] == ["192.0.2.1/32", "2001:db8::1/128"]


def test_cap_keeps_the_first_sorted_and_logs_what_was_not_added(
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = cache(max_addresses=2)
    with caplog.at_level(logging.ERROR, logger="bouheki.names"):
        c.observe(N, [(V6, 30), (A3, 30), (A1, 30), (A2, 30)], now=0)
    assert set(c.addresses(N)) == {A1, A2}
    (rec,) = caplog.records
    assert rec.levelno == logging.ERROR
    msg = rec.getMessage()
    assert N in msg and "4 addresses" in msg and "max_addresses_per_name (2)" in msg
    assert "2 addresses were not added" in msg
    assert "192.0.2.3" in msg and "2001:db8::1" in msg
    # The same overflow again is not logged at every refresh...
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="bouheki.names"):
        c.observe(N, [(V6, 30), (A3, 30), (A1, 30), (A2, 30)], now=10)
    assert caplog.records == []


def test_cap_prefers_the_current_answer_and_logs_early_removal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = cache(max_addresses=2)
    c.observe(N, [(A1, 30), (A2, 30)], now=0)
    with caplog.at_level(logging.ERROR, logger="bouheki.names"):
        # The whole set rotated (a CDN): the new answer is what clients use.
        assert c.observe(N, [(A3, 30), (V6, 30)], now=10)
    assert set(c.addresses(N)) == {A3, V6}
    (rec,) = caplog.records
    assert "2 earlier addresses were removed" in rec.getMessage()
    # With room, a stale address stays for its grace.
    c2 = cache(max_addresses=3)
    c2.observe(N, [(A1, 30), (A2, 30)], now=0)
    c2.observe(N, [(A1, 30), (A3, 30)], now=10)
    assert set(c2.addresses(N)) == {A1, A2, A3}


def test_retain_forgets_unused_names_and_add_schedules_new_ones() -> None:
    c = cache()
    c.observe("a.example", [(A1, 30)], now=0)
    c.add("b.example")
    assert c.due(0) == ["b.example"]
    assert c.needs_answer("b.example") and not c.needs_answer("a.example")
    c.retain(["b.example"])
    assert c.names() == ["b.example"]


def test_states_convert_to_realtime_usec() -> None:
    c = cache()
    c.observe(N, [(V6, 30), (A1, 20)], now=100)
    (st,) = c.states([N], lambda t: int((t + 1000) * 1_000_000))
    assert st.name == N
    assert [(a.address, a.expires_usec) for a in st.addresses] == [
        ("192.0.2.1", 1120 * 1_000_000),
        ("2001:db8::1", 1130 * 1_000_000),
    ]
    (unknown,) = c.states(["never.example"], lambda t: 0)
    assert unknown.addresses == []
