"""Files a stage's rows depend on (the MIDI stage's ``tokenizer.json`` and ``vocab.json``).

A stage with an ``artifacts()`` hook lists them in its fingerprint as ``"artifacts": {name:
sha256}``, so they are part of the committed identity. ``save_stage_artifacts`` writes them into
the stage's shard folder (atomically, before the stage's first batch of a run); a merge reads
them back with ``committed_artifacts``, checked against the hashes the commit log holds, and
publishes them in the release beside ``statistics.json`` (the data folder itself holds only what
``datasets`` loads). The manifest names them with their hashes, so a release is equal only when
they are.

Public: ``ARTIFACTS_KEY``, ``save_stage_artifacts``, ``committed_artifacts``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from amtprep.commit.store import StageStore
from amtprep.errors import CheckpointError
from amtprep.io.fsutil import atomic_write

ARTIFACTS_KEY = "artifacts"


def save_stage_artifacts(stage, shard_dir: Path) -> None:
    """Write ``stage.artifacts()`` (optional hook) into ``shard_dir`` unless already there."""
    hook = getattr(stage, "artifacts", None)
    files = hook() if callable(hook) else {}
    if not files:
        return
    shard_dir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        path = shard_dir / name
        try:
            if path.read_bytes() == data:
                continue
        except OSError:
            pass
        atomic_write(path, data, crash_tag=f"artifact.{name}")


def committed_artifacts(store: StageStore) -> dict[str, bytes]:
    """The files the committed identity names, read from the shard folder. Raises
    ``CheckpointError`` when one is missing or differs from its recorded hash."""
    settings = (store.identity or {}).get("settings") or {}
    wanted = settings.get(ARTIFACTS_KEY) or {}
    files = {}
    for name, sha256 in sorted(wanted.items()):
        path = store.shard_dir / name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CheckpointError(
                f"{path} is missing ({exc.strerror or exc}): the {store.stage} stage's rows "
                f"depend on it; restore it, or redo the stage with --reset_progress "
                f"{store.stage}"
            ) from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise CheckpointError(
                f"{path} differs from the file the {store.stage} stage committed with; "
                f"restore it, or redo the stage with --reset_progress {store.stage}"
            )
        files[name] = data
    return files
