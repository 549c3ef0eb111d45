"""What one stage has committed: its shards and commit log, recovered at start, appended to
while it runs.

Truth is the shard files plus the commit log (``amtprep.commit.log``); the checkpoint JSON users
read is a summary rewritten from them. Every figure a run reports (rows, failures, counters,
processing time) is the sum over the *live* log entries, one per idx range, so a crash at any
instant can neither lose nor double-count a batch: a shard whose log line never landed is
adopted with the counters stored in its own footer, and a range redone after its shard went
missing counts once.

On start ``recover`` removes temp files, reads the log (cutting a torn last line, leaving out
damaged ones), checks each live shard with a ``stat`` (no footer is opened), quarantines damaged
shards, adopts valid shards the log does not name yet, and rebuilds the log from the shard
footers when it is missing. It reports each of these in plain words and never raises for damaged
state.

Public: ``StageStore``, ``LiveShard``, ``Recovery``, ``BATCH_META_KEY``, ``SHARD_META_KEY``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from amtprep.commit.log import LOG_NAME, CommitLog, encode_line
from amtprep.io.checkpoint import Checkpoint, CheckpointCorrupt, load_checkpoint, save_checkpoint
from amtprep.io.fsutil import TEMP_SUFFIX, remove_temp_files
from amtprep.io.shards import ShardEntry, ShardInvalid, inspect_shard, parse_shard_name

log = logging.getLogger(__name__)

SHARD_META_KEY = b"amtprep"  # shard schema metadata: {"stage", "total_files", "input", "settings"}
BATCH_META_KEY = b"amtprep.batch"  # shard schema metadata: {"counters", "seconds"} of its batch
QUARANTINE = "quarantine"


@dataclass
class Recovery:
    source: str = "fresh"  # "log" | "rebuilt" | "fresh"
    messages: list[str] = field(default_factory=list)
    adopted: int = 0
    dropped: int = 0
    quarantined: int = 0


@dataclass(frozen=True)
class LiveShard:
    entry: ShardEntry
    counters: dict[str, int]
    seconds: float
    seq: int


def shard_identity_metadata(
    stage: str, total_files: int, input_fp: dict, settings: dict
) -> dict[bytes, bytes]:
    body = {"stage": stage, "total_files": total_files, "input": input_fp, "settings": settings}
    return {SHARD_META_KEY: json.dumps(body, sort_keys=True).encode()}


def batch_metadata(counters: dict[str, int], seconds: float) -> dict[bytes, bytes]:
    body = {"counters": counters, "seconds": round(seconds, 6)}
    return {BATCH_META_KEY: json.dumps(body, sort_keys=True).encode()}


def add_counters(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = int(out.get(k, 0)) + int(v)
    return out


class StageStore:
    """The committed state of one stage (single writer: the output dir's lock holder)."""

    def __init__(
        self, stage: str, shard_dir: Path, checkpoint_path: Path, *, replica: Any = None
    ) -> None:
        self.stage = stage
        # an output on object storage (``amtprep.commit.remote.RemoteOutput``): every shard,
        # entry and summary is written there too, the entry being the commit point
        self.replica = replica
        self.shard_dir = shard_dir
        self.checkpoint_path = checkpoint_path
        self.log = CommitLog(shard_dir / LOG_NAME, crash_tag=f"{stage}.log")
        self.identity: dict[str, Any] | None = None  # begin entry, updated by identity entries
        self.identity_changes: list[dict[str, Any]] = []
        self.live: dict[int, LiveShard] = {}  # first_idx -> the range's newest committed shard
        self.started_at: float | None = None
        self.seq = 0
        self.last_crc = ""
        self.processed = 0
        self.failed = 0
        self.counters: dict[str, int] = {}
        self.seconds = 0.0
        self._ends: dict[int, int] = {}
        self._watermark = -1

    # -- derived figures --------------------------------------------------------------------
    @property
    def total_files(self) -> int:
        return int((self.identity or {}).get("total_files", 0))

    @property
    def complete(self) -> bool:
        return self.identity is not None and self.processed >= self.total_files

    @property
    def last_processed_idx(self) -> int:
        return self._watermark

    @property
    def has_state(self) -> bool:
        return self.identity is not None or bool(self.live)

    def entries(self) -> list[ShardEntry]:
        return [self.live[k].entry for k in sorted(self.live)]

    def covered(self) -> list[tuple[int, int]]:
        return [(s.entry.first_idx, s.entry.last_idx) for _, s in sorted(self.live.items())]

    def shard_paths(self) -> list[Path]:
        """Committed shards in idx order: the only files merge may read."""
        return [self.shard_dir / e.name for e in self.entries()]

    def head(self) -> dict[str, Any]:
        """Where the log stands: equal heads mean equal committed state."""
        return {"entries": self.seq, "crc": self.last_crc}

    # -- start-up ---------------------------------------------------------------------------
    def replay_read_only(self) -> None:
        """Load what the commit log says is committed, for a reader beside the writer
        (``amtprep partial``): no recovery, nothing cut, moved or written; a torn last line (one
        being written) is left out."""
        if self.log.exists():
            for body in self.log.read().entries:
                self._replay(body)
        self._recompute()

    def recover(self) -> Recovery:
        """Reconcile the log with the shard files; never raises for damaged state."""
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        rec = Recovery()
        for p in remove_temp_files(self.shard_dir) + self._remove_own_checkpoint_temps():
            log.info("%s: removed temp file %s left by an interrupted write", self.stage, p.name)
        read = self.log.read()
        if read.torn_tail:
            self.log.cut_torn_tail(read.size)
            rec.messages.append(
                f"the commit log ended in a line cut off by a crash ({read.torn_tail} bytes): "
                "removed it; that batch is checked from its shard file"
            )
        if read.damaged_lines:
            rec.messages.append(
                f"commit log line(s) {read.damaged_lines[:10]} are damaged and were left out; "
                "their shards are checked on their own"
            )
        for body in read.entries:
            self._replay(body)
        self.last_crc = read.last_crc
        if read.entries:
            rec.source = "log"
        # names only: a Path and a name parse per shard cost ~25 us each, at 15k shards
        on_disk = {
            e.name: e
            for e in os.scandir(self.shard_dir)
            if e.name.startswith("part-") and e.name.endswith(".parquet")
        }
        self._check_live(on_disk, rec)
        self._adopt_orphans(on_disk, rec, had_log=bool(read.entries))
        if rec.source == "fresh" and self.live:
            rec.source = "rebuilt"
        self._recompute()
        if self.has_state:
            self._report_summary(rec)
        return rec

    def _remove_own_checkpoint_temps(self) -> list[Path]:
        """Only our own temp names: the checkpoint may live in a folder that holds user files."""
        folder, removed = self.checkpoint_path.parent, []
        stems = (f".{self.checkpoint_path.name}.", f".{self.checkpoint_path.name}.bak.")
        if folder.is_dir() and folder != self.shard_dir:
            for p in folder.iterdir():
                rest = p.name[len(stems[0]) :] if p.name.startswith(stems[0]) else None
                if p.name.startswith(stems[1]):
                    rest = p.name[len(stems[1]) :]
                if (
                    rest is not None
                    and rest.endswith(TEMP_SUFFIX)
                    and rest[: -len(TEMP_SUFFIX)].isdigit()
                ):
                    p.unlink(missing_ok=True)
                    removed.append(p)
        return removed

    def _replay(self, body: dict[str, Any]) -> None:
        self.seq = max(self.seq, int(body.get("seq", self.seq + 1)))
        kind = body.get("kind")
        if kind == "begin":
            if self.identity is None:
                self.identity = {
                    k: body.get(k) for k in ("stage", "total_files", "input", "settings", "request")
                }
                self.started_at = float(body.get("at") or time.time())
        elif kind == "identity" and self.identity is not None:
            self.identity["input"] = dict(body["input"])
            if "request" in body:
                self.identity["request"] = body["request"]
            self.identity_changes.append(body)
        elif kind == "shard":
            try:
                entry = ShardEntry.from_dict(body["shard"])
            except (KeyError, TypeError):
                return
            self.live[entry.first_idx] = LiveShard(
                entry, dict(body.get("counters") or {}), float(body.get("seconds") or 0.0),
                int(body.get("seq", 0)),
            )  # fmt: skip

    def _check_live(self, on_disk: dict[str, os.DirEntry], rec: Recovery) -> None:
        ordered = sorted(self.live.values(), key=lambda s: (s.entry.first_idx, s.seq))
        keep: dict[int, LiveShard] = {}
        last: LiveShard | None = None
        for s in ordered:  # overlapping ranges (a range redone in other batch sizes): newest wins
            if last is not None and s.entry.first_idx <= last.entry.last_idx:
                loser, winner = (last, s) if s.seq > last.seq else (s, last)
                keep.pop(loser.entry.first_idx, None)
                keep[winner.entry.first_idx] = winner
                last = winner
                continue
            keep[s.entry.first_idx] = s
            last = s
        self.live = keep
        for first, s in list(self.live.items()):
            dirent = on_disk.get(s.entry.name)
            if dirent is None:
                del self.live[first]
                rec.dropped += 1
                rec.messages.append(
                    f"shard {s.entry.name} is listed but missing: its {s.entry.rows} records "
                    "will be redone"
                )
                continue
            size = dirent.stat().st_size
            if size != s.entry.bytes:
                del self.live[first]
                rec.dropped += 1
                self._quarantine(
                    Path(dirent.path),
                    f"{size} bytes on disk, the commit log recorded {s.entry.bytes}",
                    rec,
                )

    def _adopt_orphans(
        self, on_disk: dict[str, os.DirEntry], rec: Recovery, *, had_log: bool
    ) -> None:
        live_names = {s.entry.name for s in self.live.values()}
        for name in sorted(n for n in on_disk if n not in live_names):
            path = Path(on_disk[name].path)
            parsed = parse_shard_name(name)
            if parsed is None or not path.exists():  # not a shard name, or quarantined above
                continue
            first, last, gen = parsed
            current = self.live.get(first)
            if (
                current is not None
                and current.entry.last_idx == last
                and gen < current.entry.generation
            ):
                self.remove_shard(name)  # an older generation a retry superseded
                log.info("%s: removed %s, superseded by %s", self.stage, name, current.entry.name)
                continue
            try:
                entry = inspect_shard(path)
                meta = pq.read_schema(path).metadata or {}
            except (ShardInvalid, OSError, ValueError) as exc:
                self._quarantine(path, str(exc), rec)
                continue
            footer = _json_meta(meta, SHARD_META_KEY)
            if (
                self.identity is not None
                and footer is not None
                and not _same_identity(footer, self.identity)
            ):
                self._quarantine(path, "made with another input or other settings", rec)
                continue
            if current is not None and not (
                current.entry.last_idx == last and gen > current.entry.generation
            ):
                self._quarantine(path, f"overlaps {current.entry.name}", rec)
                continue
            if self._overlaps(first, last, skip=first):
                self._quarantine(path, "overlaps a committed shard", rec)
                continue
            if self.identity is None:
                if footer is None:
                    rec.messages.append(
                        "the shard files carry no input/settings fingerprint: not verified"
                    )
                self.begin(
                    footer or {"total_files": 0, "input": {}, "settings": {}},
                    at=os.stat(path).st_mtime,
                )
            batch = _json_meta(meta, BATCH_META_KEY) or {}
            self.commit(
                entry, dict(batch.get("counters") or {}), float(batch.get("seconds") or 0.0),
                adopted=True,
            )  # fmt: skip
            if current is not None:
                self.remove_shard(current.entry.name)
            rec.adopted += 1
        if rec.adopted:
            if had_log:
                rec.messages.append(
                    f"adopted {rec.adopted} committed shard(s) the commit log did not list yet"
                )
            else:
                rec.messages.append(f"rebuilt the commit log from {rec.adopted} shard file(s)")

    def _overlaps(self, first: int, last: int, *, skip: int) -> bool:
        return any(
            s.entry.first_idx <= last and first <= s.entry.last_idx
            for k, s in self.live.items()
            if k != skip
        )

    def _quarantine(self, path: Path, reason: str, rec: Recovery) -> None:
        qdir = self.shard_dir / QUARANTINE
        qdir.mkdir(exist_ok=True)
        shutil.move(str(path), qdir / path.name)
        if self.replica is not None:
            self.replica.delete_shard(self.stage, path.name)
        rec.quarantined += 1
        rec.messages.append(f"moved unreadable shard to {QUARANTINE}/{path.name}: {reason}")

    def _report_summary(self, rec: Recovery) -> None:
        """Say when the summary users read was damaged; the next save rewrites it."""
        try:
            load_checkpoint(self.checkpoint_path, self.stage)
        except FileNotFoundError:
            if self.live:
                rec.messages.append(
                    f"{self.checkpoint_path.name} is missing: it is rewritten from the commit log"
                )
        except (CheckpointCorrupt, OSError) as exc:
            rec.messages.append(
                f"{self.checkpoint_path.name} is unusable ({exc}): it is rewritten from the "
                "commit log"
            )

    def _recompute(self) -> None:
        self.processed = sum(s.entry.rows for s in self.live.values())
        self.failed = sum(s.entry.failed for s in self.live.values())
        self.seconds = sum(s.seconds for s in self.live.values())
        self.counters = {}
        for s in self.live.values():
            self.counters = add_counters(self.counters, s.counters)
        self._ends = {s.entry.first_idx: s.entry.last_idx for s in self.live.values()}
        self._watermark = -1
        self._advance()

    def _advance(self) -> None:
        while self._watermark + 1 in self._ends:
            self._watermark = self._ends[self._watermark + 1]

    # -- during the run ---------------------------------------------------------------------
    def begin(self, identity: dict[str, Any], *, at: float | None = None) -> None:
        """Record the identity the stage's shards are made from (once: never overwritten)."""
        if self.identity is not None:
            return
        body = {"kind": "begin", **identity, "stage": self.stage, "at": at or time.time()}
        self._append(body)
        self._replay(body)

    def change_identity(self, input_fp: dict[str, Any], reason: str) -> None:
        """Record an allowed change of the input identity (e.g. a moved MIDI root)."""
        body = {"kind": "identity", "input": input_fp, "reason": reason, "at": time.time()}
        self._append(body)
        self._replay(body)

    def commit(
        self,
        entry: ShardEntry,
        counters: dict[str, int],
        seconds: float,
        *,
        adopted: bool = False,
    ) -> LiveShard | None:
        """Append the shard's log entry (the commit point); returns the entry it supersedes."""
        body: dict[str, Any] = {
            "kind": "shard",
            "shard": entry.to_dict(),
            "counters": counters,
            "seconds": round(seconds, 6),
            "at": time.time(),
        }
        if adopted:
            body["adopted"] = True
        if self.replica is not None:  # the shard is in the bucket before its entry
            self.replica.put_shard(self.stage, entry.name, self.shard_dir / entry.name)
        self._append(body)
        old = self.live.get(entry.first_idx)
        live = LiveShard(entry, dict(counters), float(seconds), self.seq)
        self.live[entry.first_idx] = live
        if old is not None:
            self.processed -= old.entry.rows
            self.failed -= old.entry.failed
            self.seconds -= old.seconds
            self.counters = add_counters(self.counters, {k: -v for k, v in old.counters.items()})
        self.processed += entry.rows
        self.failed += entry.failed
        self.seconds += live.seconds
        self.counters = add_counters(self.counters, live.counters)
        self._ends[entry.first_idx] = entry.last_idx
        self._advance()
        return old

    def _append(self, body: dict[str, Any]) -> None:
        self.seq += 1
        body["seq"] = self.seq
        self.last_crc = self.log.append(body)
        if self.replica is not None:  # the commit point on object storage
            self.replica.put_entry(self.stage, self.seq, encode_line(body))

    def remove_shard(self, name: str) -> None:
        """Delete a shard no live entry names (a superseded generation)."""
        (self.shard_dir / name).unlink(missing_ok=True)
        if self.replica is not None:
            self.replica.delete_shard(self.stage, name)

    def summary(self, batch_info: dict[str, Any] | None = None) -> Checkpoint:
        ident = self.identity or {}
        return Checkpoint(
            stage=self.stage,
            total_files=self.total_files,
            input=dict(ident.get("input") or {}),
            settings=dict(ident.get("settings") or {}),
            last_processed_idx=self.last_processed_idx,
            processed=self.processed,
            failed=self.failed,
            shards=len(self.live),
            log_entries=self.seq,
            batch_info=dict(batch_info or {}),
            counters=dict(self.counters),
            started_at=self.started_at or time.time(),
            complete=self.complete,
        )

    def save_summary(self, batch_info: dict[str, Any] | None = None) -> None:
        """Rewrite the checkpoint users read; raises DiskWriteError. Cost is bounded and has no
        fsync: the log is what survives power loss, and a summary it leaves stale or empty is
        rewritten from the log at the next start."""
        save_checkpoint(
            self.summary(batch_info),
            self.checkpoint_path,
            crash_tag=f"{self.stage}.checkpoint",
            durable=False,
        )
        if self.replica is not None:
            self.replica.put_summary(self.checkpoint_path)

    def close(self) -> None:
        self.log.close()


def _same_identity(footer: dict[str, Any], identity: dict[str, Any]) -> bool:
    """Made from the same input content with the same settings (where the file sits, its mtime
    or a relocated MIDI root do not change what a shard holds)."""
    return (footer.get("input") or {}).get("sha256") == (identity.get("input") or {}).get(
        "sha256"
    ) and footer.get("settings") == identity.get("settings")


def _json_meta(meta: dict[bytes, bytes], key: bytes) -> dict[str, Any] | None:
    try:
        return json.loads(meta[key]) if key in meta else None
    except ValueError:
        return None
