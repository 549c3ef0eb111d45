"""What a stage has committed: the checkpoint reconciled with the shard files on disk.

On start the ledger removes temp files, loads the checkpoint (falling back to ``.bak``, then to a
rebuild from the shard files themselves), drops listed shards that are missing or damaged,
adopts valid shards the checkpoint does not list yet (a crash between shard rename and checkpoint
save), quarantines unreadable ones, and reports each of these in plain words.

Public: ``StageLedger``, ``Recovery``, ``SHARD_META_KEY``.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from amtprep.io.checkpoint import Checkpoint, CheckpointCorrupt, load_checkpoint, save_checkpoint
from amtprep.io.fsutil import remove_temp_files
from amtprep.io.shards import ShardEntry, ShardInvalid, inspect_shard, parse_shard_name

log = logging.getLogger(__name__)

SHARD_META_KEY = b"amtprep"  # Parquet schema metadata: {"stage", "input", "settings"} as JSON
QUARANTINE = "quarantine"


@dataclass
class Recovery:
    source: str  # "checkpoint" | "backup" | "rebuilt" | "fresh"
    messages: list[str] = field(default_factory=list)
    adopted: int = 0
    dropped: int = 0
    quarantined: int = 0


class StageLedger:
    """The committed shards of one stage, and the checkpoint that summarises them."""

    def __init__(self, stage: str, shard_dir: Path, checkpoint_path: Path) -> None:
        self.stage = stage
        self.shard_dir = shard_dir
        self.checkpoint_path = checkpoint_path
        self.checkpoint: Checkpoint | None = None
        self.stored_identity: dict[str, Any] | None = (
            None  # input+settings the shards were made with
        )

    # -- start-up ---------------------------------------------------------------------------
    def recover(self) -> Recovery:
        """Reconcile checkpoint and shard files; never raises for damaged state, only reports."""
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        for p in remove_temp_files(self.shard_dir) + remove_temp_files(self.checkpoint_path.parent):
            log.info("%s: removed temp file %s left by an interrupted write", self.stage, p.name)
        rec = Recovery(source="fresh")
        ck = None
        bak = self.checkpoint_path.with_name(self.checkpoint_path.name + ".bak")
        for candidate, label in ((self.checkpoint_path, "checkpoint"), (bak, "backup")):
            try:
                ck = load_checkpoint(candidate, self.stage)
                rec.source = label
                break
            except FileNotFoundError:
                continue
            except (CheckpointCorrupt, OSError) as exc:
                rec.messages.append(f"{candidate.name} is unusable ({exc})")
        if rec.source == "backup":
            rec.messages.append(f"loaded the previous checkpoint {bak.name}")

        listed = {e.name: e for e in ck.shards} if ck else {}
        on_disk = {p.name: p for p in self.shard_dir.iterdir() if parse_shard_name(p.name)}
        valid: dict[str, ShardEntry] = {}
        for name, entry in listed.items():
            if name not in on_disk:
                rec.dropped += 1
                rec.messages.append(
                    f"shard {name} is listed but missing: its {entry.rows} records will be redone"
                )
                continue
            try:
                valid[name] = inspect_shard(on_disk[name], expect=entry)
            except ShardInvalid as exc:
                rec.dropped += 1
                self._quarantine(on_disk[name], str(exc), rec)
        for name, path in sorted(on_disk.items()):
            if name in listed:
                continue
            try:
                valid[name] = inspect_shard(path)
                rec.adopted += 1
            except ShardInvalid as exc:
                self._quarantine(path, str(exc), rec)
        if rec.adopted:
            rec.messages.append(
                f"adopted {rec.adopted} committed shard(s) the checkpoint did not list yet"
            )
        valid = self._resolve_overlaps(valid, rec)
        if ck is None and valid:
            rec.source = "rebuilt"
            rec.messages.append(f"rebuilt the checkpoint from {len(valid)} shard file(s)")

        if valid:
            newest = max(valid.values(), key=lambda e: e.last_idx)
            self.stored_identity = _read_identity(self.shard_dir / newest.name)
        if ck is not None:
            ck.shards = sorted(valid.values(), key=lambda e: e.first_idx)
            self.stored_identity = {"input": ck.input, "settings": ck.settings}
        elif valid:
            identity = self.stored_identity or {}
            if not identity:
                rec.messages.append(
                    "the shard files carry no input/settings fingerprint: not verified"
                )
            ck = Checkpoint(
                stage=self.stage,
                total_files=int(identity.get("total_files", 0)),
                input=identity.get("input", {}),
                settings=identity.get("settings", {}),
                shards=sorted(valid.values(), key=lambda e: e.first_idx),
            )
        self.checkpoint = ck
        return rec

    def _quarantine(self, path: Path, reason: str, rec: Recovery) -> None:
        qdir = self.shard_dir / QUARANTINE
        qdir.mkdir(exist_ok=True)
        shutil.move(str(path), qdir / path.name)
        rec.quarantined += 1
        rec.messages.append(f"moved unreadable shard to {QUARANTINE}/{path.name}: {reason}")

    def _resolve_overlaps(
        self, valid: dict[str, ShardEntry], rec: Recovery
    ) -> dict[str, ShardEntry]:
        """Keep the newest generation of each range; older generations were superseded by a retry."""
        keep: dict[str, ShardEntry] = {}
        last: ShardEntry | None = None
        for e in sorted(valid.values(), key=lambda e: (e.first_idx, -e.generation)):
            if last is not None and e.first_idx <= last.last_idx:
                if (e.first_idx, e.last_idx) == (last.first_idx, last.last_idx):
                    (self.shard_dir / e.name).unlink(missing_ok=True)
                    log.info("%s: removed %s, superseded by %s", self.stage, e.name, last.name)
                else:
                    self._quarantine(self.shard_dir / e.name, f"overlaps {last.name}", rec)
                continue
            keep[e.name] = e
            last = e
        return keep

    # -- during the run ---------------------------------------------------------------------
    def start(
        self, total_files: int, input_fp: dict[str, Any], settings: dict[str, Any]
    ) -> Checkpoint:
        if self.checkpoint is None:
            self.checkpoint = Checkpoint(self.stage, total_files, input_fp, settings)
        self.checkpoint.total_files = total_files
        self.checkpoint.input = input_fp
        self.checkpoint.settings = settings
        return self.checkpoint

    def add(self, entry: ShardEntry) -> list[ShardEntry]:
        """Record a committed shard; returns entries it supersedes (same range, older generation)."""
        assert self.checkpoint is not None
        old = [
            e
            for e in self.checkpoint.shards
            if e.first_idx == entry.first_idx and e.last_idx == entry.last_idx
        ]
        self.checkpoint.shards = [e for e in self.checkpoint.shards if e not in old] + [entry]
        return old

    def save(self) -> None:
        assert self.checkpoint is not None
        save_checkpoint(self.checkpoint, self.checkpoint_path, crash_tag=f"{self.stage}.checkpoint")

    def covered(self) -> list[tuple[int, int]]:
        if self.checkpoint is None:
            return []
        return sorted((e.first_idx, e.last_idx) for e in self.checkpoint.shards)

    def shard_paths(self) -> list[Path]:
        """Committed shards in idx order: the only files merge may read."""
        if self.checkpoint is None:
            return []
        return [
            self.shard_dir / e.name
            for e in sorted(self.checkpoint.shards, key=lambda e: e.first_idx)
        ]


def shard_identity_metadata(
    stage: str, total_files: int, input_fp: dict, settings: dict
) -> dict[bytes, bytes]:
    body = {"stage": stage, "total_files": total_files, "input": input_fp, "settings": settings}
    return {SHARD_META_KEY: json.dumps(body, sort_keys=True).encode()}


def _read_identity(path: Path) -> dict[str, Any] | None:
    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta[SHARD_META_KEY]) if SHARD_META_KEY in meta else None
    except Exception:
        return None
