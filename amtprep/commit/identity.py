"""One identity for committed state, checked by every path that reads it.

A stage's shards are valid only for the input and settings they were made from. The stored
identity (the log's ``begin`` entry) is compared with the current one by every reader of
committed state — each stage, a merge-only run, ``--save_partial``, ``--retry_failed`` — and a
change is refused naming it. The one change that is safe, the same MIDI files under a new root,
is allowed with ``--relocate_midi_root`` after a sample of content hashes is verified, and the
log records it; nothing overwrites the stored identity.

Public: ``INPUT_KEYS``, ``identity_changes``, ``check_identity``, ``verify_relocated_root``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from amtprep.commit.store import StageStore
from amtprep.errors import FingerprintMismatchError

log = logging.getLogger(__name__)

_COMMON = ("sha256", "format", "midi_column", "id_column")
INPUT_KEYS = {
    "midi": (*_COMMON, "midi_root", "midi_root_archive", "midi_bytes_column"),
    "text": (*_COMMON, "text_column"),
}
_NAMES = {"sha256": "input file content"}
RELOCATE_SAMPLE = 16
# settings that once were in a stage fingerprint and no longer change results: shards made
# before they left are still valid (max_midi_bytes only decides which files fail as too large)
RETIRED_SETTINGS = {"midi": {"max_midi_bytes"}, "text": set()}
# settings that joined a stage fingerprint later, already fixed by the others when they joined:
# a stored identity without one predates it and is not refused for its absence (before
# "architecture", every text model was an AutoModel, fixed by its model id and weights hash)
ADDED_SETTINGS = {"midi": set(), "text": {"architecture"}}


def identity_changes(
    stage: str, stored: dict[str, Any], input_fp: dict[str, Any], settings: dict[str, Any] | None
) -> list[str]:
    """What differs between the stored identity and the current one, in words."""
    changes = []
    old_in = stored.get("input") or {}
    for key in INPUT_KEYS[stage]:
        if key in old_in and old_in.get(key) != input_fp.get(key):
            changes.append(f"{_NAMES.get(key, key)}: {old_in.get(key)!r} -> {input_fp.get(key)!r}")
    if settings is not None:
        old_set = stored.get("settings") or {}
        retired = RETIRED_SETTINGS[stage] - set(settings)
        added = ADDED_SETTINGS[stage] - set(old_set) if old_set else set()
        for key in sorted((set(old_set) | set(settings)) - retired - added):
            if old_set.get(key) != settings.get(key):
                changes.append(f"{key}: {old_set.get(key)!r} -> {settings.get(key)!r}")
    return changes


def check_identity(
    store: StageStore,
    input_fp: dict[str, Any],
    settings: dict[str, Any] | None,
    *,
    relocate_midi_root: bool = False,
) -> None:
    """Refuse a change of input or settings against committed state; raises
    FingerprintMismatchError naming it. ``settings`` None checks the input only."""
    stored = store.identity
    if not stored:
        return
    changes = identity_changes(store.stage, stored, input_fp, settings)
    old_root = (stored.get("input") or {}).get("midi_root")
    moved = [c for c in changes if c.startswith(("midi_root:", "midi_root_archive:"))]
    if moved and relocate_midi_root and len(moved) == len(changes):
        checked = verify_relocated_root(store, Path(input_fp["midi_root"]))
        reason = f"midi_root moved {old_root!r} -> {input_fp['midi_root']!r}; {checked}"
        new_input = {**stored["input"], "midi_root": input_fp["midi_root"]}
        if "midi_root_archive" in new_input or input_fp.get("midi_root_archive"):
            new_input["midi_root_archive"] = input_fp.get("midi_root_archive")
        store.change_identity(new_input, reason)
        log.warning("%s stage: %s (recorded in the commit log)", store.stage, reason)
        return
    if changes:
        hint = (
            "; if the same MIDI files moved, pass --relocate_midi_root to verify and accept it"
            if moved
            else ""
        )
        raise FingerprintMismatchError(
            f"the {store.stage} stage in this output dir was made with different input or "
            f"settings ({'; '.join(changes)}); restore them to resume, or pass --force_restart "
            f"to start over{hint}"
        )


def verify_relocated_root(store: StageStore, new_root: Path) -> str:
    """Check that committed files hash the same under ``new_root``; raises
    FingerprintMismatchError naming the first file that does not."""
    entries = store.entries()
    if not entries:
        return "nothing committed to verify"
    step = max(1, len(entries) // RELOCATE_SAMPLE)
    checked = 0
    for entry in entries[::step][:RELOCATE_SAMPLE]:
        t = pq.read_table(
            store.shard_dir / entry.name, columns=["midi_path", "status", "content_sha256"]
        )
        t = t.filter(pc.equal(t.column("status"), "ok"))
        if not t.num_rows:
            continue
        row = t.slice(0, 1).to_pylist()[0]
        path = Path(os.path.normpath(os.path.join(new_root, os.path.expanduser(row["midi_path"]))))
        try:
            digest = hashlib.sha256(_read_under(new_root, row["midi_path"], path)).hexdigest()
        except (OSError, KeyError, ValueError) as exc:
            raise FingerprintMismatchError(
                f"--relocate_midi_root: {path} cannot be read ({exc.strerror or exc}); "
                "the new --midi_root does not hold the committed files"
            ) from None
        if digest != row["content_sha256"]:
            raise FingerprintMismatchError(
                f"--relocate_midi_root: {path} differs from the file committed as "
                f"{row['midi_path']!r}; the new --midi_root does not hold the same files"
            )
        checked += 1
    return f"verified {checked} content hash(es) under the new root"


def _read_under(root: Path, midi_path: str, path: Path) -> bytes:
    """A committed file's bytes under the new root, which may be an archive (a zip is read in
    place; a tar's member is found by one pass over its headers, fine for a 16-file sample)."""
    from amtprep.io.archives import archive_kind, is_archive, member_name

    if not is_archive(root):
        return path.read_bytes()
    name = member_name(midi_path)
    if archive_kind(root) == "zip":
        import zipfile

        with zipfile.ZipFile(root) as zf:
            return zf.read(name)
    import tarfile

    with tarfile.open(root, "r:*") as tar:
        for info in tar:
            if info.isfile() and member_name(info.name) == name:
                return tar.extractfile(info).read()
    raise KeyError(f"no member {name!r}")
