"""Per-stage JSON checkpoint: the small summary users read (``midi_checkpoint.json``).

It is not the truth (the shards and the commit log are, see ``amtprep.commit``) and never lists
shards, so its size is bounded whatever the run's length: ``last_processed_idx`` (end of the
contiguous committed prefix), ``total_files``, ``timestamp``, ``batch_info``, totals, counters,
the stored identity and how many log entries it summarises. Its body carries a sha256 of itself
so a flipped bit that still parses as JSON is caught; a damaged one is rewritten from the log.

Public: ``Checkpoint``, ``CheckpointCorrupt``, ``save_checkpoint``, ``load_checkpoint``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amtprep.io.fsutil import atomic_write

FORMAT_VERSION = 2


class CheckpointCorrupt(Exception):
    """The checkpoint file is empty, truncated, tampered with or not ours."""


@dataclass
class Checkpoint:
    stage: str
    total_files: int
    input: dict[str, Any]  # input fingerprint (path, size, sha256, columns, root)
    settings: dict[str, Any]  # stage fingerprint (settings that change results)
    last_processed_idx: int = -1
    processed: int = 0
    failed: int = 0
    shards: int = 0
    log_entries: int = 0
    batch_info: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, Any] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    timestamp: float = field(default_factory=time.time)
    complete: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "stage": self.stage,
            "last_processed_idx": self.last_processed_idx,
            "total_files": self.total_files,
            "processed": self.processed,
            "failed": self.failed,
            "complete": self.complete,
            "shards": self.shards,
            "log_entries": self.log_entries,
            "timestamp": self.timestamp,
            "timestamp_iso": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.timestamp)),
            "started_at": self.started_at,
            "batch_info": self.batch_info,
            "counters": self.counters,
            "input": self.input,
            "settings": self.settings,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Checkpoint:
        if d.get("format_version") != FORMAT_VERSION:
            raise CheckpointCorrupt(f"unknown format_version {d.get('format_version')!r}")
        try:
            return cls(
                stage=str(d["stage"]),
                total_files=int(d["total_files"]),
                input=dict(d["input"]),
                settings=dict(d["settings"]),
                last_processed_idx=int(d["last_processed_idx"]),
                processed=int(d["processed"]),
                failed=int(d["failed"]),
                shards=int(d.get("shards", 0)),
                log_entries=int(d.get("log_entries", 0)),
                batch_info=dict(d.get("batch_info") or {}),
                counters=dict(d.get("counters") or {}),
                started_at=float(d.get("started_at") or d["timestamp"]),
                timestamp=float(d["timestamp"]),
                complete=bool(d.get("complete", False)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointCorrupt(f"missing or malformed field: {exc}") from exc


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def encode_checkpoint(ck: Checkpoint) -> bytes:
    body = ck.to_dict()
    body["checksum"] = _digest(body)
    return (json.dumps(body, indent=2) + "\n").encode()


def save_checkpoint(
    ck: Checkpoint, path: Path, *, crash_tag: str = "checkpoint", durable: bool = True
) -> None:
    """Atomically replace ``path``, keeping the previous version as ``<path>.bak``.

    ``durable`` False skips the fsyncs (the commit log, not this file, is what survives power
    loss; a summary left stale or empty is detected by its checksum and rewritten).
    Raises DiskWriteError.
    """
    ck.timestamp = time.time()
    atomic_write(path, encode_checkpoint(ck), crash_tag=crash_tag, backup=True, durable=durable)


def load_checkpoint(path: Path, stage: str) -> Checkpoint:
    """Raises FileNotFoundError, or CheckpointCorrupt with the reason."""
    raw = path.read_bytes()
    if not raw.strip():
        raise CheckpointCorrupt("file is empty")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointCorrupt(f"not valid JSON ({exc})") from exc
    if not isinstance(body, dict):
        raise CheckpointCorrupt("not a JSON object")
    checksum = body.pop("checksum", None)
    if checksum != _digest(body):
        raise CheckpointCorrupt("checksum mismatch (file altered or damaged)")
    ck = Checkpoint.from_dict(body)
    if ck.stage != stage:
        raise CheckpointCorrupt(f"belongs to stage {ck.stage!r}, not {stage!r}")
    return ck
