"""Publishing: at every step of a publish, the documented paths show one whole release."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from amtprep.commit import publish
from amtprep.commit.publish import begin_release, current_manifest, publish_release


def _release(out: Path, n_rows: int, tag: str) -> None:
    rel = begin_release(out, "final")
    pq.write_table(
        pa.table({"idx": list(range(n_rows))}), rel.data_dir / "data-00000-of-00001.parquet"
    )
    (rel.data_dir / "README.md").write_text(tag)
    pq.write_table(pa.table({"idx": [n_rows]}), rel.root / "failures.parquet")
    (rel.root / "statistics.json").write_text(json.dumps({"tag": tag, "final_rows": n_rows}))
    (rel.root / "report.html").write_text(tag)
    publish_release(out, rel, {"tag": tag})


def _seen(out: Path) -> set[str] | None:
    """The release tags a reader would see through each documented path."""
    if not (out / "final").exists():
        return None
    rows = pq.read_table(out / "final" / "data-00000-of-00001.parquet").num_rows
    failed = pq.read_table(out / "failures.parquet").column("idx").to_pylist()
    stats = json.loads((out / "statistics.json").read_text())
    return {
        {3: "old", 5: "new"}[rows],
        {(3,): "old", (5,): "new"}[tuple(failed)],
        stats["tag"],
        (out / "final" / "README.md").read_text(),
        (out / "report.html").read_text(),
    }


def test_every_step_of_a_republish_shows_the_old_or_the_new_release(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _release(out, 3, "old")
    assert _seen(out) == {"old"}
    views = []

    def check(point: str) -> None:
        views.append((point, _seen(out)))

    monkeypatch.setattr(publish, "crashpoint", check)
    _release(out, 5, "new")
    assert [p for p, _ in views] == [
        "final.written",
        "final.release_renamed",
        "final.linked",
        "final.switched",
        "final.pruned",
    ]
    for point, seen in views:
        assert seen in ({"old"}, {"new"}), (point, seen)
    assert dict(views)["final.release_renamed"] == {"old"} and dict(views)["final.switched"] == {
        "new"
    }
    assert current_manifest(out)["tag"] == "new" and current_manifest(out)["seq"] == 2
    assert [p.name for p in (out / "releases").iterdir() if not p.is_symlink()] == ["final-000002"]


def test_first_publish_shows_nothing_until_the_switch(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    views = []
    monkeypatch.setattr(
        publish,
        "crashpoint",
        lambda point: views.append((point, _seen(out), (out / "statistics.json").exists())),
    )
    _release(out, 3, "old")
    for point, seen, stats_visible in views:
        assert seen in (None, {"old"}), point
        if point in ("final.written", "final.release_renamed", "final.linked"):
            assert seen is None and not stats_visible


def test_staging_left_by_a_killed_merge_is_cleared_and_never_visible(tmp_path):
    out = tmp_path / "out"
    _release(out, 3, "old")
    stale = begin_release(out, "final")  # a merge killed while writing
    (stale.data_dir / "data-00000-of-00001.parquet").write_bytes(b"half")
    assert _seen(out) == {"old"}
    _release(out, 5, "new")
    assert not stale.root.exists() and _seen(out) == {"new"}


@pytest.mark.parametrize("legacy", ["dir", "file"])
def test_pre_release_layout_is_replaced_by_links(tmp_path, legacy):
    out = tmp_path / "out"
    (out / "final").mkdir(parents=True)
    (out / "final" / "data-00000-of-00001.parquet").write_bytes(b"old layout")
    (out / "statistics.json").write_text("{}")
    _release(out, 5, "new")
    assert (out / "final").is_symlink() and (out / "statistics.json").is_symlink()
    assert _seen(out) == {"new"}


def test_only_our_stale_link_temps_are_removed(tmp_path):
    out = tmp_path / "out"
    _release(out, 3, "old")
    ours = out / ".final.4242.link.tmp"
    ours.symlink_to("releases/final/data")
    theirs = out / ".notes.link.tmp"
    theirs.write_text("a user's file")
    assert publish.remove_stale_link_temps(out) == [ours]
    assert theirs.exists() and _seen(out) == {"old"}
