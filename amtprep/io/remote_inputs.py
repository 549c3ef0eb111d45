"""Inputs on object storage: the paired file and a MIDI archive are copied to the working dir.

Both are read many times (the input at every start for its identity and rows, an archive by
every worker, at random offsets), so one download is cheaper than ranged reads, and everything
downstream reads a local file as before. A copy is kept with the object's ETag and fetched again
only when the object changed. A folder of MIDI files is not copied: workers read each file from
the bucket (``amtprep.midi.extract.read_midi_bytes``).

Public: ``stage_remote_file(url, dest_dir) -> Path``, ``url_parent(url)``.
"""

from __future__ import annotations

from pathlib import Path

from amtprep.errors import InputFileError
from amtprep.io.storage import open_storage


def url_parent(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[0]


def stage_remote_file(url: str, dest_dir: Path) -> Path:
    """A local copy of the object at ``url``, fetched when missing or changed."""
    parent, name = url.rstrip("/").rsplit("/", 1)
    storage = open_storage(parent)
    try:
        etag = storage.etag(name)
    except Exception as exc:  # botocore's credential errors are not OSErrors
        raise InputFileError(
            f"cannot read {url}: {exc}; check the AWS_* variables or ~/.aws"
        ) from exc
    if etag is None:
        raise InputFileError(f"{url}: no such object")
    local = dest_dir / name
    tag_file = dest_dir / f".{name}.etag"
    try:
        if local.exists() and tag_file.read_text() == etag:
            return local
    except OSError:
        pass
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        storage.download(name, local)
    except OSError as exc:
        raise InputFileError(f"cannot download {url}: {exc}") from exc
    tag_file.write_text(etag)
    return local
