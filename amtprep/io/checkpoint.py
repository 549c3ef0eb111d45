"""Per-stage JSON checkpoint: a small, rebuildable summary of the committed shards.

The checkpoint never holds processed data. It records the input's identity, the stage settings,
the committed shards and ``last_processed_idx`` (end of the contiguous committed prefix). Its body
carries a sha256 of itself so a flipped bit that still parses as JSON is caught.

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
from amtprep.io.shards import ShardEntry

FORMAT_VERSION = 1


class CheckpointCorrupt(Exception):
    """The checkpoint file is empty, truncated, tampered with or not ours."""


@dataclass
class Checkpoint:
    stage: str
    total_files: int
    input: dict[str, Any]  # input fingerprint (path, size, sha256, columns)
    settings: dict[str, Any]  # stage fingerprint (settings that change results)
    shards: list[ShardEntry] = field(default_factory=list)
    batch_info: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, Any] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    timestamp: float = field(default_factory=time.time)
    complete: bool = False

    @property
    def last_processed_idx(self) -> int:
        """Last idx of the contiguous run of committed shards starting at 0 (-1 when none)."""
        end = -1
        for s in sorted(self.shards, key=lambda s: s.first_idx):
            if s.first_idx > end + 1:
                break
            end = max(end, s.last_idx)
        return end

    @property
    def processed(self) -> int:
        return sum(s.rows for s in self.shards)

    @property
    def failed(self) -> int:
        return sum(s.failed for s in self.shards)

    def to_dict(self) -> dict[str, Any]:
        shards = sorted(self.shards, key=lambda s: s.first_idx)
        return {
            "format_version": FORMAT_VERSION,
            "stage": self.stage,
            "last_processed_idx": self.last_processed_idx,
            "total_files": self.total_files,
            "processed": self.processed,
            "failed": self.failed,
            "complete": self.complete,
            "timestamp": self.timestamp,
            "timestamp_iso": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.timestamp)),
            "started_at": self.started_at,
            "batch_info": self.batch_info,
            "counters": self.counters,
            "input": self.input,
            "settings": self.settings,
            "shards": [s.to_dict() for s in shards],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Checkpoint:
        try:
            if d.get("format_version") != FORMAT_VERSION:
                raise CheckpointCorrupt(f"unknown format_version {d.get('format_version')!r}")
            ck = cls(
                stage=str(d["stage"]),
                total_files=int(d["total_files"]),
                input=dict(d["input"]),
                settings=dict(d["settings"]),
                shards=[ShardEntry.from_dict(s) for s in d["shards"]],
                batch_info=dict(d.get("batch_info") or {}),
                counters=dict(d.get("counters") or {}),
                started_at=float(d.get("started_at") or d["timestamp"]),
                timestamp=float(d["timestamp"]),
                complete=bool(d.get("complete", False)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointCorrupt(f"missing or malformed field: {exc}") from exc
        if ck.last_processed_idx != d.get("last_processed_idx"):
            raise CheckpointCorrupt("last_processed_idx disagrees with the shard list")
        return ck


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def encode_checkpoint(ck: Checkpoint) -> bytes:
    body = ck.to_dict()
    body["checksum"] = _digest(body)
    return (json.dumps(body, indent=2) + "\n").encode()


def save_checkpoint(ck: Checkpoint, path: Path, *, crash_tag: str = "checkpoint") -> None:
    """Atomically replace ``path``, keeping the previous version as ``<path>.bak``.

    Raises DiskWriteError.
    """
    ck.timestamp = time.time()
    atomic_write(path, encode_checkpoint(ck), crash_tag=crash_tag, backup=True)


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
