"""MIDI bytes inside a Parquet input (GigaMIDI layout) and archives as a MIDI root.

Every run is a real run (``amtprep.cli.main`` in process, the tiny random BERT for captions):
real mido/symusic parsing of generated MIDI, real Parquet, real zip/tar archives. The reference
is always the same files read from a plain folder.
"""

from __future__ import annotations

import hashlib
import json
import random
import tarfile
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from amtprep.cli import main
from amtprep.io.midi_bytes import MidiBytesReader
from amtprep.sample import generate
from tests.helpers import read_final

N = 12
# features that do not depend on where the bytes came from
SAME = ["content_sha256", "content_md5", "parser", "n_notes", "duration_s", "tempo_bpm", "notes"]


def _run(corpus: Path, out: Path, model: Path, *extra: str) -> None:
    args = ["--input_file", str(corpus), "--output_dir", str(out), "--text_model", str(model),
            "--batch_size", "4", "--no_progress", "--log_level", "warning", *extra]  # fmt: skip
    assert main(args) == 0


@pytest.fixture
def files_corpus(tmp_path) -> Path:
    return generate(tmp_path / "files", n=N, seed=3)


@pytest.fixture
def files_run(files_corpus, tmp_path, tiny_bert):
    out = tmp_path / "out-files"
    _run(files_corpus, out, tiny_bert)
    return read_final(out)


def _rows(corpus: Path) -> list[dict]:
    return [json.loads(line) for line in corpus.read_text().splitlines() if line.strip()]


def _bytes_parquet(
    corpus: Path, dest: Path, extra: list[tuple] = (), group_rows: int = 5, alt: bool = False
):
    """GigaMIDI layout: md5, caption, music (bytes); ``extra`` rows (md5, caption, music) after;
    with ``alt`` a second bytes column ``alt`` holding the same bytes."""
    rows = _rows(corpus)
    data = [(corpus.parent / r["location"]).read_bytes() for r in rows]
    md5 = [hashlib.md5(d).hexdigest() for d in data] + [e[0] for e in extra]
    table = pa.table(
        {
            "md5": md5,
            "caption": [r["caption"] for r in rows] + [e[1] for e in extra],
            "music": pa.array(data + [e[2] for e in extra], pa.binary()),
        }
    )
    if alt:
        table = table.append_column("alt", table.column("music"))
    pq.write_table(table, dest, row_group_size=group_rows)
    return dest


def _by(table: pa.Table, key: str) -> dict:
    return {row[key]: row for row in table.to_pylist()}


def test_bytes_input_matches_files(files_corpus, files_run, tmp_path, tiny_bert):
    good = (files_corpus.parent / "midi/0000.mid").read_bytes()
    corrupt = b"MThd\x00\x00\x00\x06garbage"
    extra = [
        (hashlib.md5(corrupt).hexdigest(), "corrupt", corrupt),
        ("bb" * 16, "md5 mismatch", good),
        ("cc" * 16, "empty", b""),
        (None, "null bytes", None),
    ]
    source = _bytes_parquet(files_corpus, tmp_path / "giga.parquet", extra)
    out = tmp_path / "out-bytes"
    _run(source, out, tiny_bert, "--midi_bytes_column", "music", "--workers", "2")
    final, failures = read_final(out)
    ref, _ = files_run
    assert final.num_rows == N
    assert "music" not in final.column_names
    # ids are the md5 column, which equals the content hash users join on
    assert final.column("id").to_pylist() == final.column("content_md5").to_pylist()
    got, want = _by(final, "content_sha256"), _by(ref, "content_sha256")
    assert set(got) == set(want)
    for sha, row in got.items():
        for column in SAME:
            assert row[column] == want[sha][column], column
    midi_failures = {
        r["idx"]: r["error_type"] for r in failures.to_pylist() if r["stage"] == "midi"
    }
    assert midi_failures == {
        N: "corrupt_midi",
        N + 1: "md5_mismatch",
        N + 2: "empty_file",
        N + 3: "empty_file",
    }


def test_keep_midi_bytes(files_corpus, tmp_path, tiny_bert):
    source = _bytes_parquet(files_corpus, tmp_path / "giga.parquet")
    out = tmp_path / "out"
    _run(source, out, tiny_bert, "--midi_bytes_column", "music")
    assert "music" not in read_final(out)[0].column_names
    _run(source, out, tiny_bert, "--midi_bytes_column", "music", "--keep_midi_bytes")
    final = read_final(out)[0]
    original = pq.read_table(source)
    assert final.column("music").to_pylist() == original.column("music").to_pylist()
    ids = final.column("id").to_pylist()
    for data, md5 in zip(final.column("music").to_pylist(), ids, strict=True):
        assert hashlib.md5(data).hexdigest() == md5


def test_reader_streams_row_groups(files_corpus, tmp_path):
    source = _bytes_parquet(files_corpus, tmp_path / "giga.parquet", group_rows=3)
    assert pq.ParquetFile(source).num_row_groups == 4
    reader = MidiBytesReader(source, "music")
    loads = []
    original = reader._load

    def counting(group):
        if group != reader._group:
            loads.append(group)
        original(group)

    reader._load = counting
    want = pq.read_table(source).to_pylist()
    for start in range(0, N, 4):  # batches in idx order touch each row group once
        got = reader.read(range(start, min(N, start + 4)))
        assert [d for d, _ in got] == [w["music"] for w in want[start : start + 4]]
    assert loads == [0, 1, 2, 3]
    assert reader._data is not None and len(reader._data) <= 3  # one row group held
    reader.close()


def test_bytes_resume_after_stop(files_corpus, tmp_path, tiny_bert, capsys):
    from tests.helpers import run_args, start_cli, wait_for

    source = _bytes_parquet(files_corpus, tmp_path / "giga.parquet", alt=True)
    ref = tmp_path / "ref"
    _run(source, ref, tiny_bert, "--midi_bytes_column", "music")
    out = tmp_path / "out"
    args = run_args(source, out, tiny_bert, "--midi_bytes_column", "music", "--batch_size", "2")
    proc = start_cli(args, delay=1.0)
    try:
        wait_for(out / "midi", "*.parquet")
    finally:
        proc.kill()  # SIGKILL mid-run: only committed batches count
        proc.wait()
    _run(source, out, tiny_bert, "--midi_bytes_column", "music", "--mode", "continue")
    a, b = read_final(ref)[0], read_final(out)[0]
    assert a.drop_columns(["embedding"]).to_pylist() == b.drop_columns(["embedding"]).to_pylist()
    # another bytes column (same bytes even) is another input: refused, naming it
    capsys.readouterr()
    rc = main(["--input_file", str(source), "--output_dir", str(out), "--text_model",
               str(tiny_bert), "--no_progress", "--stages", "midi",
               "--midi_bytes_column", "alt", "--retry_failed"])  # fmt: skip
    assert rc != 0
    assert "midi_bytes_column: 'music' -> 'alt'" in capsys.readouterr().err


def _archive(kind: str, corpus: Path, dest: Path) -> Path:
    folder = corpus.parent
    names = sorted(p.relative_to(folder).as_posix() for p in (folder / "midi").glob("*.mid"))
    random.Random(0).shuffle(names)  # members in an order unlike the input's
    if kind == "zip":
        with zipfile.ZipFile(dest, "w") as zf:
            for name in names:
                zf.write(folder / name, name)
        return dest
    mode = "w:gz" if kind == "tar.gz" else "w"
    with tarfile.open(dest, mode) as tar:
        for name in names:
            tar.add(folder / name, "./" + name)
    return dest


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
def test_archive_root_matches_folder(kind, files_corpus, files_run, tmp_path, tiny_bert):
    archive = _archive(kind, files_corpus, tmp_path / f"corpus.{kind}")
    rows = _rows(files_corpus)
    random.Random(1).shuffle(rows)  # input order unlike the archive's
    rows.append({"location": "midi/absent.mid", "caption": "missing"})
    corpus = tmp_path / "shuffled.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / f"out-{kind}"
    _run(corpus, out, tiny_bert, "--midi_root", str(archive), "--workers", "2")
    final, failures = read_final(out)
    ref, _ = files_run
    got, want = _by(final, "midi_path"), _by(ref, "midi_path")
    assert set(got) == set(want)
    for path, row in got.items():
        for column in SAME:
            assert row[column] == want[path][column], column
    midi_failures = [r for r in failures.to_pylist() if r["stage"] == "midi"]
    assert [(r["midi_path"], r["error_type"]) for r in midi_failures] == [
        ("midi/absent.mid", "missing_file")
    ]
    if kind != "zip":
        assert list((out / ".midi-root").glob("*.index.json"))
    assert (out / ".midi-root").exists() == (kind != "zip")
    # a text-only run builds nothing
    text_only = tmp_path / f"text-{kind}"
    _run(corpus, text_only, tiny_bert, "--midi_root", str(archive), "--stages", "text")
    assert not (text_only / ".midi-root").exists()


def test_changed_archive_is_refused(files_corpus, tmp_path, tiny_bert, capsys):
    archive = _archive("zip", files_corpus, tmp_path / "corpus.zip")
    out = tmp_path / "out"
    _run(files_corpus, out, tiny_bert, "--midi_root", str(archive), "--stages", "midi")
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("midi/extra.mid", b"x")
    rc = main(["--input_file", str(files_corpus), "--output_dir", str(out), "--text_model",
               str(tiny_bert), "--no_progress", "--stages", "midi", "--midi_root", str(archive),
               "--retry_failed"])  # fmt: skip
    assert rc != 0
    assert "midi_root_archive:" in capsys.readouterr().err


def test_content_md5_on_file_rows(files_run, files_corpus):
    final, _ = files_run
    for row in final.to_pylist():
        data = (files_corpus.parent / row["midi_path"]).read_bytes()
        assert row["content_md5"] == hashlib.md5(data).hexdigest()


def test_relocate_folder_to_archive(files_corpus, tmp_path, tiny_bert, capsys):
    """The same files moved into a zip: refused, then accepted with --relocate_midi_root."""
    out = tmp_path / "out"
    _run(files_corpus, out, tiny_bert, "--stages", "midi")
    archive = _archive("zip", files_corpus, tmp_path / "moved.zip")
    args = ["--input_file", str(files_corpus), "--output_dir", str(out), "--text_model",
            str(tiny_bert), "--no_progress", "--midi_root", str(archive)]  # fmt: skip
    assert main(args) != 0
    assert "--relocate_midi_root" in capsys.readouterr().err
    assert main([*args, "--relocate_midi_root"]) == 0
    assert read_final(out)[0].num_rows == N


def test_bytes_with_cache_and_bad_input(files_corpus, files_run, tmp_path, tiny_bert, capsys):
    source = _bytes_parquet(files_corpus, tmp_path / "giga.parquet")
    cache = tmp_path / "cache"
    for name in ("a", "b"):  # the second run's rows come from the cache
        _run(source, tmp_path / name, tiny_bert, "--midi_bytes_column", "music", "--use_cache",
             "--cache_dir", str(cache))  # fmt: skip
    stats = json.loads((tmp_path / "b" / "statistics.json").read_text())
    assert stats["stages"]["midi"]["cache_hit_rate"] == 1.0
    a, b = read_final(tmp_path / "a")[0], read_final(tmp_path / "b")[0]
    assert a.drop_columns(["embedding"]).to_pylist() == b.drop_columns(["embedding"]).to_pylist()
    capsys.readouterr()
    rc = main(["--input_file", str(files_corpus), "--output_dir", str(tmp_path / "c"),
               "--midi_bytes_column", "music", "--no_progress"])  # fmt: skip
    assert rc != 0
    assert "needs a Parquet input" in capsys.readouterr().err


def test_bytes_and_archive_tokens_match_files(files_corpus, tmp_path, tiny_bert):
    """Tokens ride along from any source: the same ids as from the files."""
    pytest.importorskip("miditok")
    source = _bytes_parquet(files_corpus, tmp_path / "giga.parquet")
    archive = _archive("tar", files_corpus, tmp_path / "corpus.tar")
    runs = {
        "files": (files_corpus, ()),
        "bytes": (source, ("--midi_bytes_column", "music")),
        "tar": (files_corpus, ("--midi_root", str(archive))),
    }
    tokens = {}
    for name, (corpus, extra) in runs.items():
        out = tmp_path / f"out-{name}"
        _run(corpus, out, tiny_bert, "--tokenizer", "remi", *extra)
        final = read_final(out)[0]
        tokens[name] = dict(
            zip(final.column("content_sha256").to_pylist(), final.column("tokens").to_pylist(),
                strict=True)
        )  # fmt: skip
    assert len(tokens["files"]) == N
    assert tokens["bytes"] == tokens["files"] == tokens["tar"]
