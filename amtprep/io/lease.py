"""One writer per output location where there are no file locks: a lease of create-only objects.

Public API: ``Lease(storage, ttl_s=60.0, clock=time.time)`` with ``acquire()``, ``renew()``,
``release()``, ``current_holder()``, ``generation`` and ``holder``; ``LEASE_PREFIX``.

``io/lock.py``'s ``flock`` needs a local file system. On object storage the lease is a chain of
small JSON objects ``_lease/<generation>.json``, each written create-only
(``Storage.write_new``), each naming its holder (id, PID, host, start, command) and an expiry on
the holder's clock. The newest generation is the state: held while unexpired and not released
(a holder on this host whose process is gone is taken over at once, so a resume after a
``kill -9`` need not wait for the expiry).
To take the lease, write the next generation; if that name is taken, someone else moved first,
so read again. Renewing is writing the next generation too, so a holder whose lease expired and
was taken over finds its next name taken and learns it at once (``LeaseLostError``), and the
generation is a fencing token later writes can carry. The two newest generations are kept, older
ones deleted. Expiry is wall-clock: holders and takers must agree on time to within a small
part of ``ttl_s`` (NTP does).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable

from amtprep.errors import LeaseLostError, LockHeldError, ObjectExistsError
from amtprep.io.lock import describe_holder
from amtprep.io.storage import Storage

log = logging.getLogger(__name__)

LEASE_PREFIX = "_lease"
_ATTEMPTS = 20


def _dead_here(body: dict) -> bool:
    """The holder ran on this host and its process is gone (killed, crashed): no need to wait
    for the expiry. A reused PID only makes us wait, the safe way."""
    if body.get("host") != socket.gethostname() or not isinstance(body.get("pid"), int):
        return False
    if body["pid"] == os.getpid():
        return False  # this process's own earlier holder object (a test, a second lease)
    try:
        os.kill(body["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _name(generation: int) -> str:
    return f"{LEASE_PREFIX}/{generation:012d}.json"


class Lease:
    def __init__(
        self, storage: Storage, ttl_s: float = 60.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.storage = storage
        self.ttl_s = ttl_s
        self.clock = clock
        self.generation: int | None = None
        self.holder = {
            "id": uuid.uuid4().hex,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(sys.argv),
        }

    def acquire(self) -> None:
        """Take the lease. Raises ``LockHeldError`` naming a live holder and when it expires."""
        for _ in range(_ATTEMPTS):
            generation, body = self._latest()
            now = self.clock()
            if body and not body.get("released") and body["expires"] > now and not _dead_here(body):
                raise LockHeldError(
                    f"{self.storage.url('')} is in use by another amtprep run "
                    f"({describe_holder(body)}; its lease runs {body['expires'] - now:.0f} s more "
                    "unless renewed); wait for it to finish or stop it, then run again"
                )
            if body and not body.get("released"):
                why = (
                    "a lease of a process no longer running"
                    if _dead_here(body)
                    else "an expired lease"
                )
                log.warning("took over %s (%s)", why, describe_holder(body))
            if self._write(generation + 1, released=False):
                return
        raise LockHeldError(f"{self.storage.url('')}: the lease is contended; run again")

    def renew(self) -> None:
        """Extend the lease by ``ttl_s`` from now. Raises ``LeaseLostError`` when another run
        took it over after it expired."""
        if self.generation is None:
            raise LeaseLostError("renew() without the lease")
        if not self._write(self.generation + 1, released=False):
            _, body = self._latest()
            self.generation = None
            raise LeaseLostError(
                f"{self.storage.url('')}: this run's lease expired and was taken over by "
                f"{describe_holder(body)}; stopping so the two runs never write together"
            )

    def release(self) -> None:
        """Give the lease up (a next run takes it at once). Quiet when it was lost."""
        if self.generation is not None and not self._write(self.generation + 1, released=True):
            log.warning("the lease was taken over before it was released")
        self.generation = None

    def current_holder(self) -> dict | None:
        """The live holder (unexpired, not released), read without taking the lease."""
        _, body = self._latest()
        if body and not body.get("released") and body["expires"] > self.clock():
            return body
        return None

    def _write(self, generation: int, released: bool) -> bool:
        body = {**self.holder, "generation": generation, "released": released}
        body["expires"] = self.clock() + (0.0 if released else self.ttl_s)
        try:
            self.storage.write_new(_name(generation), json.dumps(body).encode())
        except ObjectExistsError:
            return False
        self.generation = None if released else generation
        for old in self._generations()[:-2]:
            self.storage.delete(_name(old))
        return True

    def _generations(self) -> list[int]:
        found = []
        for name in self.storage.list(LEASE_PREFIX):
            stem = name.rsplit("/", 1)[-1].removesuffix(".json")
            if stem.isdigit():
                found.append(int(stem))
        return sorted(found)

    def _latest(self) -> tuple[int, dict]:
        for _ in range(_ATTEMPTS):  # the newest may be pruned between listing and reading
            generations = self._generations()
            if not generations:
                return 0, {}
            try:
                return generations[-1], json.loads(self.storage.read(_name(generations[-1])))
            except FileNotFoundError:
                continue
        raise LockHeldError(f"{self.storage.url('')}: the lease is contended; run again")

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
