"""The object-storage lease: one holder, a second run refused, a stale lease taken over."""

from __future__ import annotations

import json
import logging

import pytest

from amtprep.errors import LeaseLostError, LockHeldError
from amtprep.io.lease import LEASE_PREFIX, Lease
from tests.helpers import race


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_second_run_is_refused_naming_the_holder(storage):
    clock = Clock()
    first = Lease(storage, ttl_s=60, clock=clock)
    first.acquire()
    clock.now += 30
    with pytest.raises(LockHeldError, match=r"in use by another amtprep run \(PID \d+ on host"):
        Lease(storage, ttl_s=60, clock=clock).acquire()
    first.renew()  # the holder keeps it: expires at +90
    clock.now += 50  # +80: past the first expiry (+60), within the renewed one
    with pytest.raises(LockHeldError, match="runs 10 s more"):
        Lease(storage, ttl_s=60, clock=clock).acquire()


def test_a_stale_lease_is_taken_over_and_its_old_holder_learns_it(storage, caplog):
    clock = Clock()
    stale = Lease(storage, ttl_s=60, clock=clock)
    stale.acquire()
    old = stale.generation
    clock.now += 61  # the holder died (or hung) and never renewed
    taker = Lease(storage, ttl_s=60, clock=clock)
    with caplog.at_level(logging.WARNING, logger="amtprep.io.lease"):
        taker.acquire()
    assert "took over an expired lease" in caplog.text
    assert taker.generation == old + 1
    with pytest.raises(LeaseLostError, match="taken over by PID"):
        stale.renew()  # it wakes up: its next generation is taken
    taker.renew()  # the new holder is unaffected
    with pytest.raises(LockHeldError):
        Lease(storage, ttl_s=60, clock=clock).acquire()


def test_release_lets_the_next_run_in_at_once(storage):
    clock = Clock()
    with Lease(storage, ttl_s=3600, clock=clock):
        pass
    nxt = Lease(storage, ttl_s=3600, clock=clock)
    nxt.acquire()  # no waiting for the hour
    assert nxt.generation is not None


def test_only_the_two_newest_generations_are_kept(storage):
    clock = Clock()
    lease = Lease(storage, ttl_s=60, clock=clock)
    lease.acquire()
    for _ in range(5):
        clock.now += 10
        lease.renew()
    names = storage.list(LEASE_PREFIX)
    assert len(names) == 2
    newest = json.loads(storage.read(names[-1]))
    assert newest["generation"] == lease.generation and newest["expires"] == clock.now + 60
    assert newest["id"] == lease.holder["id"] and not newest["released"]


def test_runs_racing_for_a_free_lease_leave_exactly_one_holder(storage):
    clock = Clock()
    leases = [Lease(storage, ttl_s=60, clock=clock) for _ in range(5)]
    won, refused = race([lease.acquire for lease in leases], LockHeldError)
    assert len(won) == 1 and len(refused) == len(leases) - 1
    leases[won[0]].renew()
