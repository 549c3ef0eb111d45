"""What a reader of a bucket output sees, as a local folder the local checks can read."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def materialize(url: str, dest: Path) -> Path:
    """What a reader of the bucket sees now, laid out like a local output dir (``final``,
    ``failures.parquet``, ``statistics.json``...) so the local checks apply: the pointer
    ``releases/final.json``, then the files of the one release it names. A file the pointer
    lists but the bucket lacks raises FileNotFoundError."""
    from amtprep.commit.publish import LINKS
    from amtprep.commit.remote import read_pointer
    from amtprep.io.storage import open_storage

    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    storage = open_storage(url)
    for kind, links in LINKS.items():
        body, _ = read_pointer(storage, kind)
        if body is None:
            continue
        rel = dest / "releases" / kind
        for name in body["files"]:
            storage.download(f"{body['release']}/{name}", rel / name)
        for path, inside in links.items():
            target = rel / inside
            if target.exists():
                (dest / path).parent.mkdir(parents=True, exist_ok=True)
                os.symlink(target, dest / path)
    return dest
