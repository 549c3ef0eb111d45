"""Publish what a reader sees as one step: a versioned release folder and one pointer switch.

A release holds everything of one merge: ``data/`` (the ``data-*.parquet`` files and the dataset
card), ``failures.parquet``, ``leakage.parquet``, ``duplicates.parquet`` (``--dedup drop``),
``statistics.json``, ``report.html`` and ``manifest.json``. It is
built under ``releases/<kind>-<seq>.incomplete``, fsynced and renamed whole; then the pointer
``releases/<kind>`` (a symlink) is switched to it with one ``rename``: the only step a reader can
observe. The documented paths are fixed symlinks through that pointer (``final`` ->
``releases/final/data``, ``statistics.json`` -> ``releases/final/statistics.json``, ...), made
before the switch (dangling until the first one), so at every instant they all show the old
release, or all the new one, or (before the first publish) nothing. A release without a report
leaves ``report.html`` dangling. Older releases are removed after the switch. ``OPTIONAL_LINKS``
(a run with tokens: ``tokenizer.json``, ``vocab.json``) are made like the others when the
release holds the file, and removed after the switch when it does not.

On object storage the pointer is a small object written with a conditional put (see
docs/architecture.md).

Public: ``Release``, ``begin_release``, ``publish_release``, ``current_manifest``, ``LINKS``,
``OPTIONAL_LINKS``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amtprep.io.crashpoints import crashpoint
from amtprep.io.fsutil import fsync_dir

log = logging.getLogger(__name__)

RELEASES = "releases"
DATA = "data"
MANIFEST = "manifest.json"
# documented path (in the output dir) -> the file inside a release it shows
LINKS = {
    "final": {
        "final": DATA,
        "failures.parquet": "failures.parquet",
        "statistics.json": "statistics.json",
        "report.html": "report.html",
        "duplicates.parquet": "duplicates.parquet",  # --dedup drop only; dangling otherwise
        "leakage.parquet": "leakage.parquet",
    },
    "partial": {
        "partial": DATA,
        "partial_failures.parquet": "failures.parquet",
        "partial_duplicates.parquet": "duplicates.parquet",
        "partial_leakage.parquet": "leakage.parquet",
    },
}
# links made only when the release holds the file (the files of ``amtprep.commit.artifacts``)
OPTIONAL_LINKS = {
    "final": {"tokenizer.json": "tokenizer.json", "vocab.json": "vocab.json"},
    "partial": {},
}


@dataclass
class Release:
    kind: str
    seq: int
    root: Path  # the staging folder while building, the release folder once published

    @property
    def data_dir(self) -> Path:
        return self.root / DATA


def _pointer(output_dir: Path, kind: str) -> Path:
    return output_dir / RELEASES / kind


def begin_release(output_dir: Path, kind: str) -> Release:
    """A fresh staging folder for the next release of ``kind``."""
    base = output_dir / RELEASES
    base.mkdir(parents=True, exist_ok=True)
    seqs = [
        int(p.name.split("-")[1].split(".")[0])
        for p in base.iterdir()
        if p.name.startswith(f"{kind}-") and p.name.split("-")[1].split(".")[0].isdigit()
    ]
    seq = max(seqs, default=0) + 1
    for p in base.iterdir():  # staging left by a killed merge
        if p.name.startswith(f"{kind}-") and p.name.endswith(".incomplete"):
            shutil.rmtree(p, ignore_errors=True)
    root = base / f"{kind}-{seq:06d}.incomplete"
    (root / DATA).mkdir(parents=True)
    return Release(kind, seq, root)


def _fsync_tree(root: Path) -> None:
    for folder, _dirs, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(Path(folder))


def _switch_link(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` with one rename (a reader sees the old or the new)."""
    if link.is_symlink() and os.readlink(link) == target:
        return
    tmp = link.with_name(f".{link.name}.{os.getpid()}.link.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    if link.is_dir() and not link.is_symlink():  # the pre-release layout: a real folder
        legacy = link.with_name(f".{link.name}.legacy")
        shutil.rmtree(legacy, ignore_errors=True)
        link.rename(legacy)
        os.replace(tmp, link)
        shutil.rmtree(legacy, ignore_errors=True)
    else:
        os.replace(tmp, link)


def publish_release(output_dir: Path, release: Release, manifest: dict[str, Any]) -> Path:
    """Make ``release`` the one readers see; returns its data folder (via the fixed link)."""
    kind = release.kind
    (release.root / MANIFEST).write_text(
        json.dumps({**manifest, "kind": kind, "seq": release.seq}, indent=2, default=str) + "\n"
    )
    _fsync_tree(release.root)
    crashpoint(f"{kind}.written")
    final_root = release.root.with_name(f"{kind}-{release.seq:06d}")
    release.root.rename(final_root)
    release.root = final_root
    fsync_dir(final_root.parent)
    crashpoint(f"{kind}.release_renamed")
    # The fixed links go through the pointer, so they may be made first (dangling before the
    # first release): the pointer switch is then the one step that changes what readers see.
    optional = {p: i for p, i in OPTIONAL_LINKS[kind].items() if (final_root / i).exists()}
    for path, inside in {**LINKS[kind], **optional}.items():
        _switch_link(output_dir / path, f"{RELEASES}/{kind}/{inside}")
    fsync_dir(output_dir)
    crashpoint(f"{kind}.linked")
    pointer = _pointer(output_dir, kind)
    _switch_link(pointer, final_root.name)
    fsync_dir(pointer.parent)
    crashpoint(f"{kind}.switched")
    for path in OPTIONAL_LINKS[kind]:
        if path not in optional and (output_dir / path).is_symlink():
            (output_dir / path).unlink()  # the release has no such file: no dangling link
    for p in final_root.parent.iterdir():
        if p.name.startswith(f"{kind}-") and p != final_root and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
    crashpoint(f"{kind}.pruned")
    return output_dir / next(iter(LINKS[kind]))


def remove_stale_link_temps(output_dir: Path) -> list[Path]:
    """Temp links a killed publish left (``.<name>.<pid>.link.tmp``), and nothing else."""
    removed = []
    for folder in (output_dir, output_dir / RELEASES):
        if folder.is_dir():
            for p in folder.iterdir():
                if p.name.startswith(".") and p.name.endswith(".link.tmp") and p.is_symlink():
                    p.unlink()
                    removed.append(p)
    return removed


def current_manifest(output_dir: Path, kind: str = "final") -> dict[str, Any] | None:
    """The manifest of the release readers see now, or None."""
    try:
        return json.loads((_pointer(output_dir, kind) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def remove_releases(output_dir: Path) -> list[Path]:
    """Everything published (releases, pointers, fixed links); for --force_restart/reset."""
    removed = []
    for kind, links in LINKS.items():
        for path in [*links, *OPTIONAL_LINKS[kind]]:
            p = output_dir / path
            if p.is_symlink() or p.is_file():
                p.unlink()
                removed.append(p)
            elif p.is_dir():
                shutil.rmtree(p)
                removed.append(p)
        del kind
    base = output_dir / RELEASES
    if base.is_dir():
        shutil.rmtree(base)
        removed.append(base)
    return removed
