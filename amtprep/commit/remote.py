"""An output on object storage: the bucket holds the truth, a local working copy does the work.

``--output_dir s3://bucket/run`` runs the same protocol as a local folder, with the commit
point moved to the bucket, where nothing is renamed:

- **Shards** are uploaded create-only under their final name (``<stage>/part-….parquet``,
  ``Storage.write_new``) before their log entry; an object is visible only once whole.
- **The commit log** is one create-only object per entry, ``<stage>/_log/<seq>.json`` holding
  the very line (checksum included) the local log holds. The entry's PUT is the commit point:
  a batch whose entry object exists is committed, whatever the driver's disk holds.
- **The lock** is a lease (``amtprep.io.lease``), renewed in the background and checked before
  every write to the bucket; a run that lost it stops before its next commit.
- **A publish** uploads the release built locally under a name unique to the attempt
  (``releases/<kind>-<seq>-<token>/…``, the manifest last), then switches the pointer
  ``releases/<kind>.json`` with one conditional PUT (``If-Match`` on the version read, or
  create-only for the first). Readers read the pointer and then only that release's files, so
  they see the whole old release or the whole new one. Releases older than the previous one
  are deleted after the switch; a crashed attempt's files, never pointed to, go with them.

The local working copy (``--work_dir``, by default under the cache dir) is rebuilt from the
bucket at every start (``hydrate``): local shards the bucket lacks were never committed and are
removed, missing ones are downloaded, and the local log is rewritten from the entry objects. So
a resume on another machine, or after the working copy was lost, gives the same rows. The rest
of the code (stages, recovery, merge, report) runs unchanged on the working copy.

Public: ``RemoteOutput``, ``default_work_dir(url)``, ``read_pointer(storage, kind)``,
``POINTER``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from amtprep.commit.log import LOG_NAME, decode_line
from amtprep.errors import LeaseLostError, LockHeldError, ObjectExistsError, OutputDirError
from amtprep.io.crashpoints import crashpoint
from amtprep.io.lease import Lease
from amtprep.io.storage import Storage, open_storage

log = logging.getLogger(__name__)

REMOTE_LOG = "_log"
RELEASES = "releases"
POINTER = "releases/{kind}.json"
LEASE_TTL_S = 60.0


def default_work_dir(url: str, cache_dir: Path) -> Path:
    """The working copy of ``url`` on this machine: one per output URL."""
    return cache_dir / "work" / hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]


def _log_name(stage: str, seq: int) -> str:
    return f"{stage}/{REMOTE_LOG}/{seq:09d}.json"


def read_pointer(storage: Storage, kind: str = "final") -> tuple[dict[str, Any] | None, str | None]:
    """(pointer body, its etag) of the release readers see now, or (None, None)."""
    name = POINTER.format(kind=kind)
    for _ in range(5):  # the etag and the body must be of one version
        etag = storage.etag(name)
        if etag is None:
            return None, None
        try:
            body = json.loads(storage.read(name))
        except FileNotFoundError:
            continue
        except ValueError:
            return None, etag
        if storage.etag(name) == etag:
            return body, etag
    return None, storage.etag(name)


class RemoteOutput:
    """The bucket side of one run (single writer: the lease holder)."""

    def __init__(self, url: str, work_dir: Path, *, lease_ttl_s: float = LEASE_TTL_S) -> None:
        self.url = url.rstrip("/")
        self.work_dir = Path(work_dir)
        self.storage = open_storage(self.url)
        self.lease = Lease(self.storage, ttl_s=lease_ttl_s)
        self._lost: LeaseLostError | None = None
        self._renewed_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # renewals from the thread and from check()

    # -- the lease ----------------------------------------------------------------------------
    def __enter__(self) -> RemoteOutput:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def ran_here_before(self) -> bool:
        """A run started here before (it left lease objects); raises ``OutputDirError`` when
        the bucket cannot be reached."""
        return bool(self._reach(lambda: self.storage.list("_lease")))

    def acquire(self) -> None:
        self._reach(self.lease.acquire)
        self._renewed_at = time.monotonic()
        self._thread = threading.Thread(target=self._renew_loop, name="amtprep-lease", daemon=True)
        self._thread.start()

    def _reach(self, call):
        try:
            return call()
        except LockHeldError:
            raise
        except Exception as exc:  # botocore's credential errors are not OSErrors
            raise OutputDirError(
                f"cannot reach {self.url}: {exc}; check the bucket name and the AWS_* "
                "variables or ~/.aws (credentials, region, AWS_ENDPOINT_URL)"
            ) from exc

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease.ttl_s / 3):
            try:
                self._renew()
            except LeaseLostError as exc:
                self._lost = exc
                return
            except Exception as exc:  # a network hiccup: check() retries before the next write
                log.warning("could not renew the lease on %s: %s", self.url, exc)

    def _renew(self) -> None:
        with self._lock:
            self.lease.renew()
            self._renewed_at = time.monotonic()

    def check(self) -> None:
        """Raise ``LeaseLostError`` unless this run still holds the lease (renewing it when it
        is older than a third of its term): called before every write to the bucket."""
        if self._lost is not None:
            raise self._lost
        if time.monotonic() - self._renewed_at > self.lease.ttl_s / 3:
            self._renew()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            try:
                self.lease.release()
            except Exception as exc:  # the lease then expires on its own
                log.warning("could not release the lease on %s: %s", self.url, exc)

    # -- start-up -----------------------------------------------------------------------------
    def hydrate(self, stage: str, shard_dir: Path, checkpoint_path: Path) -> list[str]:
        """Make the working copy of ``stage`` what the bucket has committed; returns messages
        for the operator."""
        messages: list[str] = []
        shard_dir.mkdir(parents=True, exist_ok=True)
        remote = self.storage.sizes(f"{stage}/")
        shards = {
            n.split("/", 1)[1]: size
            for n, size in remote.items()
            if n.count("/") == 1 and n.split("/", 1)[1].startswith("part-")
        }
        lines: list[bytes] = []
        for name in sorted(n for n in remote if n.startswith(f"{stage}/{REMOTE_LOG}/")):
            data = self._read(name)
            if data is None:
                continue
            if decode_line(data) is None:
                self.storage.delete(name)  # its seq is free again; its shard is an orphan
                messages.append(f"commit entry {name} in the bucket is damaged: removed it")
                continue
            lines.append(data.rstrip(b"\n") + b"\n")
        removed = 0
        for p in shard_dir.iterdir():
            if p.is_file() and p.name.startswith("part-") and p.name not in shards:
                p.unlink()  # uploaded never, so committed never
                removed += 1
        if removed:
            log.info("%s: removed %d local shard(s) the bucket never received", stage, removed)
        fetched = 0
        for name, size in sorted(shards.items()):
            local = shard_dir / name
            if not local.exists() or local.stat().st_size != size:
                self.storage.download(f"{stage}/{name}", local)
                fetched += 1
        if fetched:
            log.info("%s stage: downloaded %d committed shard(s) from %s", stage, fetched, self.url)
        log_path = shard_dir / LOG_NAME
        body = b"".join(lines)
        if not log_path.exists() or log_path.read_bytes() != body:
            tmp = log_path.with_name(f".{LOG_NAME}.{os.getpid()}.tmp")
            tmp.write_bytes(body)
            os.replace(tmp, log_path)
        rel = self._relative(checkpoint_path)
        if rel is not None:
            data = self._read(rel)
            if data is not None:
                checkpoint_path.write_bytes(data)
        return messages

    def _read(self, name: str) -> bytes | None:
        try:
            return self.storage.read(name)
        except FileNotFoundError:
            return None

    def _relative(self, path: Path) -> str | None:
        try:
            return (
                Path(os.path.abspath(path)).relative_to(os.path.abspath(self.work_dir)).as_posix()
            )
        except ValueError:
            return None  # an explicit --midi_checkpoint elsewhere: kept only where it is

    # -- during the run -----------------------------------------------------------------------
    def put_shard(self, stage: str, name: str, local: Path) -> None:
        """Upload a shard create-only before its log entry; the same bytes already there (an
        adopted orphan, a retried upload) are fine, other bytes are another writer's."""
        self.check()
        data = local.read_bytes()
        key = f"{stage}/{name}"
        try:
            self.storage.write_new(key, data)
        except ObjectExistsError:
            if hashlib.sha256(self.storage.read(key)).digest() != hashlib.sha256(data).digest():
                raise LeaseLostError(
                    f"{self.storage.url(key)} holds other bytes than this run's shard: another "
                    "run writes here; stopping"
                ) from None
        crashpoint(f"{stage}.remote.shard")

    def put_entry(self, stage: str, seq: int, line: bytes) -> None:
        """The commit point: entry ``seq`` of ``stage``'s log, create-only."""
        self.check()
        try:
            self.storage.write_new(_log_name(stage, seq), line)
        except ObjectExistsError:
            raise LeaseLostError(
                f"commit entry {seq} of the {stage} stage already exists in {self.url}: another "
                "run commits here; stopping"
            ) from None
        crashpoint(f"{stage}.remote.entry")

    def put_summary(self, path: Path) -> None:
        rel = self._relative(path)
        if rel is not None:
            self.check()
            self.storage.write(rel, path.read_bytes())

    def delete_shard(self, stage: str, name: str) -> None:
        """A shard no live entry names (superseded or quarantined)."""
        self.check()
        self.storage.delete(f"{stage}/{name}")

    def reset(self) -> list[str]:
        """``--force_restart``: remove everything but the lease."""
        names = [n for n in self.storage.list() if not n.startswith("_lease/")]
        for n in names:
            self.storage.delete(n)
        return names

    # -- publishing ---------------------------------------------------------------------------
    def current_manifest(self, kind: str) -> dict[str, Any] | None:
        body, _ = read_pointer(self.storage, kind)
        return (body or {}).get("manifest")

    def current_data_url(self, kind: str) -> str | None:
        body, _ = read_pointer(self.storage, kind)
        return (body or {}).get("data")

    def read_release_file(self, kind: str, name: str) -> bytes | None:
        body, _ = read_pointer(self.storage, kind)
        return self._read(f"{body['release']}/{name}") if body else None

    def publish(self, kind: str, release_root: Path, manifest: dict[str, Any]) -> str:
        """Upload the local release and switch the pointer to it; returns the data URL."""
        old, etag = read_pointer(self.storage, kind)
        prefix = f"{RELEASES}/{release_root.name}-{uuid.uuid4().hex[:8]}"
        files = sorted(
            p.relative_to(release_root).as_posix()
            for p in release_root.rglob("*")
            if p.is_file() and not p.is_symlink()
        )
        files.sort(key=lambda n: n == "manifest.json")  # the manifest last
        for rel in files:
            self.check()
            self.storage.write_new(f"{prefix}/{rel}", (release_root / rel).read_bytes())
        crashpoint(f"{kind}.remote.uploaded")
        pointer = {
            "kind": kind,
            "release": prefix,
            "data": self.storage.url(f"{prefix}/data"),
            "files": files,
            "manifest": manifest,
            "published_at": time.time(),
        }
        self.check()
        try:
            self.storage.write_if(
                POINTER.format(kind=kind), json.dumps(pointer, indent=2).encode(), etag
            )
        except ObjectExistsError:
            raise LeaseLostError(
                f"{self.url}: the {kind} pointer changed while this run published: another run "
                "publishes here; stopping"
            ) from None
        crashpoint(f"{kind}.remote.switched")
        # the previous release stays for readers that read its pointer a moment ago
        self._prune(kind, keep={prefix, (old or {}).get("release")})
        crashpoint(f"{kind}.remote.pruned")
        return pointer["data"]

    def _prune(self, kind: str, keep: set[str | None]) -> None:
        """Delete releases of ``kind`` other than those in ``keep``."""
        for name in self.storage.list(RELEASES):
            parts = name.split("/")
            if len(parts) < 3 or not parts[1].startswith(f"{kind}-"):
                continue
            if f"{RELEASES}/{parts[1]}" not in keep:
                self.storage.delete(name)
