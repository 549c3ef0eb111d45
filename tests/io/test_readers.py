"""Input readers: the same data read from .json/.jsonl/.csv/.parquet, bad rows, bad files."""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import os
import sys
import tracemalloc
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amtprep.errors import InputFileError
from amtprep.io import json_array_stream
from amtprep.io.readers import InputSource, InputSpec

FORMATS = ("json", "jsonl", "csv", "parquet")

# MidiCaps' layout; values are strings so that a CSV round trip keeps them equal.
MIDICAPS_ROWS = [
    {
        "location": f"lmd_full/{i % 3}/{i:04x}.mid",
        "caption": f"A calm piano piece, number {i}.",
        "genre": ["classical", "pop"][i % 2],
        "key": "C major",
        "test_set": "False",
    }
    for i in range(7)
]


def write(path: Path, rows: list[dict], **parquet_kwargs) -> Path:
    fmt = path.suffix[1:]
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "json":
        path.write_text(json.dumps(rows, indent=2))
    elif fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path, **parquet_kwargs)
    return path


def read(path: Path, **spec) -> list:
    return list(InputSource(InputSpec(path, **spec)).iter_records())


@pytest.mark.parametrize("fmt", FORMATS)
def test_midicaps_layout_resolves_against_the_file_folder(tmp_path, fmt):
    source = InputSource(InputSpec(write(tmp_path / f"train.{fmt}", MIDICAPS_ROWS)))
    assert (source.format, source.midi_column, source.text_column) == (fmt, "location", "caption")
    assert source.extra_columns == ["genre", "key", "test_set"]
    records = list(source.iter_records())
    assert [r.idx for r in records] == list(range(7))
    first = records[1]
    assert first.id == first.midi_path == "lmd_full/1/0001.mid"
    assert first.resolved_path == str(tmp_path / "lmd_full/1/0001.mid")
    assert first.caption == "A calm piano piece, number 1."
    assert first.extra == {"genre": "pop", "key": "C major", "test_set": "False"}
    assert all(r.row_error is None and r.caption_error is None for r in records)


def test_every_format_yields_identical_records(tmp_path):
    by_format = {fmt: read(write(tmp_path / f"in.{fmt}", MIDICAPS_ROWS)) for fmt in FORMATS}
    assert by_format["jsonl"] == by_format["json"] == by_format["csv"] == by_format["parquet"]


@pytest.mark.parametrize("fmt", ["json", "jsonl", "parquet"])
def test_extra_columns_keep_their_types(tmp_path, fmt):
    rows = [
        {
            "location": "a.mid",
            "caption": "c",
            "genre": ["rock", "pop"],
            "tempo": 120,
            "duration": 12.5,
            "test_set": True,
            "chord_summary": None,
        }
    ]
    (record,) = read(write(tmp_path / f"in.{fmt}", rows))
    assert record.extra == {
        "genre": ["rock", "pop"],
        "tempo": 120,
        "duration": 12.5,
        "test_set": True,
        "chord_summary": None,
    }
    assert json.loads(json.dumps(record.extra)) == record.extra


def test_parquet_values_become_json_ready(tmp_path):
    table = pa.table(
        {
            "location": ["a.mid"],
            "caption": ["c"],
            "when": pa.array([dt.datetime(2024, 5, 1, 12, 30)], pa.timestamp("us")),
            "price": pa.array([Decimal("1.10")], pa.decimal128(5, 2)),
            "meta": [{"bars": 8, "tags": ["x"]}],
            "mood": pa.array(["calm"]).dictionary_encode(),
        }
    )
    pq.write_table(table, tmp_path / "in.parquet")
    (record,) = read(tmp_path / "in.parquet")
    assert record.extra == {
        "when": "2024-05-01T12:30:00",
        "price": "1.10",
        "meta": {"bars": 8, "tags": ["x"]},
        "mood": "calm",
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_explicit_midi_root_absolute_and_home_paths(tmp_path, fmt, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    rows = [
        {"location": "sub/./x.mid", "caption": "a"},
        {"location": "/abs/y.mid", "caption": "b"},
        {"location": "~/z.mid", "caption": "c"},
        {"location": "../up.mid", "caption": "d"},
    ]
    path = write(tmp_path / f"in.{fmt}", rows)
    resolved = [r.resolved_path for r in read(path, midi_root=tmp_path / "midis")]
    assert resolved == [
        str(tmp_path / "midis/sub/x.mid"),
        "/abs/y.mid",
        str(tmp_path / "home/z.mid"),
        str(tmp_path / "up.mid"),
    ]
    assert read(path)[3].midi_path == "../up.mid"  # as written, for the output


@pytest.mark.parametrize("fmt", FORMATS)
def test_column_overrides_and_id_column(tmp_path, fmt):
    rows = [
        {"uid": "u0", "file": "a.mid", "desc": "first", "location": "decoy.mid", "caption": "no"},
        {"uid": "", "file": "b.mid", "desc": "second", "location": "decoy.mid", "caption": "no"},
    ]
    path = write(tmp_path / f"in.{fmt}", rows)
    source = InputSource(InputSpec(path, midi_column="file", text_column="desc", id_column="uid"))
    assert source.extra_columns == ["location", "caption"]
    records = list(source.iter_records())
    assert [(r.id, r.midi_path, r.caption) for r in records] == [
        ("u0", "a.mid", "first"),
        ("b.mid", "b.mid", "second"),  # an empty id falls back to the MIDI path
    ]


def test_id_column_named_id_is_picked_up_and_numbers_become_strings(tmp_path):
    path = write(tmp_path / "in.jsonl", [{"id": 17, "midi": "a.mid", "text": "t"}])
    source = InputSource(InputSpec(path))
    assert (source.id_column, source.midi_column, source.text_column) == ("id", "midi", "text")
    assert [r.id for r in source.iter_records()] == ["17"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_iter_records_from_start(tmp_path, fmt):
    rows = [{"location": f"{i}.mid", "caption": str(i)} for i in range(25)]
    path = write(tmp_path / f"in.{fmt}", rows, row_group_size=10)  # start lands in group 2
    source = InputSource(InputSpec(path))
    assert [r.idx for r in source.iter_records(start=13)] == list(range(13, 25))
    assert [r.caption for r in source.iter_records(start=13)][:2] == ["13", "14"]
    assert list(source.iter_records(start=25)) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_count_rows_matches_iteration(tmp_path, fmt):
    rows = [{"location": f"{i}.mid", "caption": f"c{i}"} for i in range(12)]
    source = InputSource(InputSpec(write(tmp_path / f"in.{fmt}", rows, row_group_size=5)))
    assert source.count_rows() == 12 == len(list(source.iter_records()))


def test_csv_count_handles_quoted_newlines_and_blank_lines(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text(
        'location,caption\n\na.mid,"line one\nline two\n\nline four"\n\nb.mid,plain\n\n\n'
    )
    source = InputSource(InputSpec(path))
    assert source.count_rows() == 2
    records = list(source.iter_records())
    assert [(r.idx, r.midi_path) for r in records] == [(0, "a.mid"), (1, "b.mid")]
    assert records[0].caption == "line one\nline two\n\nline four"


def test_jsonl_blank_lines_take_no_idx_and_error_lines_count_physical_lines(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'\n{"location": "a.mid", "caption": "a"}\n   \n{oops\n\n')
    source = InputSource(InputSpec(path))
    records = list(source.iter_records())
    assert source.count_rows() == 2
    assert [r.idx for r in records] == [0, 1]
    assert records[1].row_error.startswith("line 4: invalid JSON")


def test_jsonl_malformed_rows_become_error_records_and_iteration_continues(tmp_path):
    lines = [
        '{"location": "a.mid", "caption": "ok", "genre": "rock"}',
        '{"location": "b.mid", "caption": ',  # truncated
        '["not", "an", "object"]',
        '{"caption": "no path"}',
        '{"location": null, "caption": "null path"}',
        '{"location": 42, "caption": "number path"}',
        '{"location": "  ", "caption": "blank path"}',
        '{"location": "z.mid", "caption": "last"}',
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    records = read(path)
    assert [r.idx for r in records] == list(range(8))
    errors = [r.row_error for r in records]
    assert errors[0] is None and errors[7] is None
    assert errors[1].startswith("line 2: invalid JSON")
    assert errors[2] == "line 3: JSON array is not an object"
    assert errors[3] == "line 4: no MIDI path: column 'location' is absent"
    assert errors[4] == "line 5: no MIDI path: column 'location' is null"
    assert errors[5] == "line 6: no MIDI path: column 'location' is a JSON number, not a string"
    assert errors[6] == "line 7: no MIDI path: column 'location' is empty"
    # Whatever could be recovered is kept; every record has the same extra keys.
    assert records[3].caption == "no path" and records[3].id == "3"
    assert records[5].midi_path == "42"
    assert records[1].extra == {"genre": None} and records[1].id == "1"
    assert records[7].caption == "last"


def test_csv_wrong_field_count_is_a_row_error(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text(
        "location,caption,genre\na.mid,one,rock\nb.mid,two\nc.mid,three,pop,extra\nd.mid,four,jazz\n"
    )
    records = read(path)
    assert [r.row_error for r in records] == [
        None,
        "line 3: expected 3 fields like the header, found 2",
        "line 4: expected 3 fields like the header, found 4",
        None,
    ]
    assert records[1].midi_path == "b.mid" and records[1].extra == {"genre": None}
    assert records[3].caption == "four"


def test_json_array_non_object_elements_are_row_errors(tmp_path):
    path = tmp_path / "in.json"
    path.write_text(
        '[\n{"location": "a.mid", "caption": "a"},\n3,\n"s",\n{"location": "b.mid", "caption": "b"}\n]'
    )
    records = read(path)
    assert [r.row_error for r in records] == [
        None,
        "line 3: array element 1 is a JSON number, not an object",
        "line 4: array element 2 is a JSON string, not an object",
        None,
    ]


@pytest.mark.parametrize("chunk", [1 << 20, 64])
def test_json_array_elements_python_cannot_decode_are_row_errors(tmp_path, monkeypatch, chunk):
    # Valid JSON by its brackets, but json.loads gives up: RecursionError past the recursion
    # limit, ValueError past the int digit limit. Each must cost its own row, not the run.
    monkeypatch.setattr(json_array_stream, "_CHUNK", chunk)  # elements cut across refills
    deep = "[" * 100_000 + "]" * 100_000
    limit = sys.get_int_max_str_digits()
    digits = "7" * (limit + 700)
    path = tmp_path / "in.json"
    path.write_text(
        "[\n"
        + ",\n".join(
            [
                '{"location": "a.mid", "caption": "a"}',
                deep,
                '{"location": "b.mid", "caption": "b", "n": ' + digits + "}",
                '{"location": "c.mid", "caption": "c", "n": ' + digits + ".5}",  # a float: fine
                '{"location": "d.mid", "caption": "d"}',
            ]
        )
        + "\n]"
    )
    source = InputSource(InputSpec(path))
    assert source.count_rows() == 5
    records = list(source.iter_records())
    assert [r.row_error for r in records] == [
        None,
        "line 3: array element 1 cannot be read: nested too deeply",
        f"line 4: array element 2 cannot be read: holds an integer longer than {limit} digits",
        None,
        None,
    ]
    assert [r.midi_path for r in records] == ["a.mid", "", "", "c.mid", "d.mid"]


def test_jsonl_line_python_cannot_decode_is_a_row_error(tmp_path):
    limit = sys.get_int_max_str_digits()
    path = tmp_path / "in.jsonl"
    path.write_text(
        '{"location": "a.mid", "caption": "a", "n": ' + "7" * (limit + 700) + "}\n"
        + "[" * 100_000 + "]" * 100_000 + "\n"
        + '{"location": "b.mid", "caption": "b"}\n'
    )  # fmt: skip
    records = read(path)
    assert [r.row_error for r in records] == [
        f"line 1: JSON cannot be read: holds an integer longer than {limit} digits",
        "line 2: JSON cannot be read: nested too deeply",
        None,
    ]


def test_captions_missing_non_string_and_huge(tmp_path):
    huge = "la " * 100_000  # longer than the csv module's default field limit
    rows = [
        {"location": "a.mid", "caption": None},
        {"location": "b.mid"},
        {"location": "c.mid", "caption": 123},
        {"location": "d.mid", "caption": ["x"]},
        {"location": "e.mid", "caption": huge},
    ]
    records = read(write(tmp_path / "in.jsonl", rows))
    assert [(r.caption, r.caption_error) for r in records[:4]] == [
        (None, "missing caption"),
        (None, "missing caption"),
        ("123", None),
        (None, "caption is a JSON array, not text"),
    ]
    assert records[4].caption == huge
    csv_rows = [{"location": "e.mid", "caption": huge}]
    assert read(write(tmp_path / "in.csv", csv_rows))[0].caption == huge


def test_invalid_utf8_caption_in_jsonl(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        b'{"location": "a.mid", "caption": "caf\xc3\xa9 ok"}\n'
        b'{"location": "b.mid", "caption": "caf\xe9 bad", "genre": "r\xffck"}\n'
        b'{"location": "c.mid", "caption": "fine"}\n'
    )
    records = read(path)
    assert records[0].caption == "caf\u00e9 ok"
    assert records[1].caption is None
    assert records[1].caption_error == (
        "invalid UTF-8 at byte 3 of the caption: invalid continuation byte (0xe9)"
    )
    assert records[1].row_error is None and records[1].midi_path == "b.mid"
    assert records[1].extra == {"genre": "r\ufffdck"}  # writable as UTF-8
    assert records[2].caption == "fine"


def test_invalid_utf8_caption_in_csv(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"location,caption\na.mid,good\nb.mid,ab\xffcd\nc.mid,also good\n")
    records = read(path)
    assert [r.caption for r in records] == ["good", None, "also good"]
    assert (
        records[1].caption_error
        == "invalid UTF-8 at byte 2 of the caption: invalid start byte (0xff)"
    )


def test_invalid_utf8_midi_path_is_a_row_error(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"location": "a\xff.mid", "caption": "c"}\n')
    (record,) = read(path)
    assert (
        record.row_error
        == "line 1: invalid UTF-8 at byte 1 of the MIDI path: invalid start byte (0xff)"
    )
    assert record.midi_path == "a\ufffd.mid"


def test_lone_surrogate_escape_in_caption(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"location": "a.mid", "caption": "x\\ud800y"}\n')
    (record,) = read(path)
    assert record.caption is None
    assert (
        record.caption_error
        == "invalid Unicode at character 1 of the caption: lone surrogate U+D800"
    )


def test_binary_parquet_caption_with_invalid_utf8(tmp_path):
    table = pa.table(
        {"location": ["a.mid", "b.mid"], "caption": pa.array([b"ok", b"\xffno"], pa.binary())}
    )
    pq.write_table(table, tmp_path / "in.parquet")
    records = read(tmp_path / "in.parquet")
    assert records[0].caption == "ok"
    assert (
        records[1].caption_error
        == "invalid UTF-8 at byte 0 of the caption: invalid start byte (0xff)"
    )


def test_byte_order_mark_is_ignored(tmp_path):
    (tmp_path / "in.csv").write_bytes(b"\xef\xbb\xbflocation,caption\na.mid,c\n")
    (tmp_path / "in.jsonl").write_bytes(b'\xef\xbb\xbf{"location": "a.mid", "caption": "c"}\n')
    (tmp_path / "in.json").write_bytes(b'\xef\xbb\xbf[{"location": "a.mid", "caption": "c"}]')
    for name in ("in.csv", "in.jsonl", "in.json"):
        assert [(r.midi_path, r.row_error) for r in read(tmp_path / name)] == [("a.mid", None)]


def test_keys_first_seen_after_the_sample_are_dropped_with_one_warning(tmp_path, caplog):
    rows = [{"location": f"{i}.mid", "caption": "c"} for i in range(1000)]
    rows += [{"location": "late.mid", "caption": "c", "late": 1}] * 2
    with caplog.at_level(logging.WARNING, logger="amtprep.io.readers"):
        records = read(write(tmp_path / "in.jsonl", rows))
    assert records[-1].extra == {}
    assert len([m for m in caplog.messages if "'late'" in m]) == 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_fingerprint_follows_content(tmp_path, fmt):
    path = write(tmp_path / f"in.{fmt}", MIDICAPS_ROWS)
    first = InputSource(InputSpec(path)).fingerprint()
    assert first == InputSource(InputSpec(path)).fingerprint()
    assert first["path"] == str(path) and first["size"] == path.stat().st_size
    assert (first["format"], first["midi_column"], first["text_column"]) == (
        fmt,
        "location",
        "caption",
    )
    changed = [dict(r) for r in MIDICAPS_ROWS]
    changed[3]["caption"] = changed[3]["caption"].replace("calm", "loud")  # same length
    write(path, changed)
    os.utime(path, ns=(first["mtime_ns"], first["mtime_ns"]))
    second = InputSource(InputSpec(path)).fingerprint()
    assert second["sha256"] != first["sha256"]
    assert second["mtime_ns"] == first["mtime_ns"]
    if fmt != "parquet":  # compression changes a Parquet file's size anyway
        assert second["size"] == first["size"]


def test_fingerprint_records_settings_that_change_records(tmp_path):
    path = write(tmp_path / "in.jsonl", MIDICAPS_ROWS)
    default = InputSource(InputSpec(path)).fingerprint()
    rooted = InputSource(InputSpec(path, midi_root=tmp_path / "m")).fingerprint()
    assert rooted["midi_root"] == str(tmp_path / "m") != default["midi_root"]
    assert rooted["sha256"] == default["sha256"]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("missing.jsonl", None, "input file not found: .*missing.jsonl; check the path"),
        ("data.txt", b"x", r"unknown input format '.txt' .*use one of .csv, .json, .jsonl"),
        ("a.parquet", b"PAR1 this is not parquet", "is not a readable Parquet file .*re-export"),
        ("a.json", b'{"location": "a.mid"}', "is not a JSON array .*rename the file to .jsonl"),
        ("a.json", b"", "is not a JSON array .starts with an empty file"),
        ("a.csv", b"\n\n", "is empty; a .csv input needs a header row"),
        ("a.csv", b"location,caption,location\n", r"duplicate column names \['location'\]"),
        ("a.jsonl", b"", "has no JSON objects in its first 1000 rows"),
    ],
)
def test_unusable_files_raise_input_file_error_saying_how_to_fix(tmp_path, name, content, expected):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputFileError, match=expected):
        InputSource(InputSpec(path))


def test_directory_and_missing_columns_raise_with_the_fix(tmp_path):
    with pytest.raises(
        InputFileError, match="is a directory.*pass the .json/.jsonl/.csv/.parquet file"
    ):
        InputSource(InputSpec(tmp_path))
    path = write(tmp_path / "in.csv", [{"file": "a.mid", "desc": "c"}])
    with pytest.raises(InputFileError) as info:
        InputSource(InputSpec(path))
    assert str(info.value) == (
        "input has no MIDI path column (looked for location, midi_path, midi); "
        "found columns [file, desc]; pass --midi_column NAME"
    )
    with pytest.raises(
        InputFileError,
        match=r"no column 'fil' \(from --midi_column\); found columns \[file, desc\]",
    ):
        InputSource(InputSpec(path, midi_column="fil"))
    with pytest.raises(InputFileError, match="no caption column .*pass --text_column NAME"):
        InputSource(InputSpec(path, midi_column="file"))
    assert isinstance(info.value, OSError)  # callers may catch the built-in


def test_json_syntax_error_inside_the_array_is_an_input_file_error(tmp_path):
    path = tmp_path / "in.json"
    good = '{"location": "a.mid", "caption": "a"},\n'
    path.write_text("[" + good + '{"location": "b.mid" "caption": "b"}]')
    with pytest.raises(
        InputFileError, match="is not valid JSON: Expecting ',' delimiter at line 2"
    ):
        InputSource(InputSpec(path))
    # Past the rows sampled for column names, count_rows (called before a run starts) finds it.
    path.write_text("[" + good * 1500 + '{"location": "b.mid" "caption": "b"}]')
    source = InputSource(InputSpec(path))
    with pytest.raises(InputFileError, match="Expecting ',' delimiter at line 1501"):
        source.count_rows()


@settings(max_examples=60, deadline=None)
@given(
    elements=st.lists(
        st.one_of(
            st.dictionaries(
                st.text(max_size=5),
                st.recursive(
                    st.none()
                    | st.booleans()
                    | st.integers()
                    | st.floats(allow_nan=False)
                    | st.text(),
                    lambda inner: (
                        st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=3), inner, max_size=3)
                    ),
                    max_leaves=6,
                ),
                max_size=4,
            ),
            st.integers(),
            st.floats(allow_nan=False),
        ),
        max_size=8,
    ),
    chunk=st.integers(min_value=1, max_value=64),
    indent=st.sampled_from([None, 1]),
)
def test_json_array_stream_matches_json_loads_for_any_chunking(
    tmp_path_factory, elements, chunk, indent
):
    path = tmp_path_factory.mktemp("stream") / "in.json"
    path.write_text(json.dumps(elements, indent=indent, ensure_ascii=False))
    saved, json_array_stream._CHUNK = json_array_stream._CHUNK, chunk
    try:
        streamed = [value for _, value, _ in json_array_stream.JsonArrayStream(path)]
    finally:
        json_array_stream._CHUNK = saved
    assert streamed == elements


def test_iter_batches_are_contiguous_and_skip_unwanted_rows(tmp_path):
    rows = [{"location": f"{i}.mid", "caption": "c"} for i in range(10)]
    source = InputSource(InputSpec(write(tmp_path / "in.jsonl", rows)))
    done = {2, 3, 7}
    batches = source.iter_batches(3, wanted=lambda idx: idx not in done)
    assert [[r.idx for r in b] for b in batches] == [[0, 1], [4, 5, 6], [8, 9]]
    assert [len(b) for b in source.iter_batches(4)] == [4, 4, 2]
    with pytest.raises(ValueError, match="batch_size"):
        next(source.iter_batches(0))


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_memory_stays_bounded_while_streaming(tmp_path, fmt):
    limit = 8 * 1024 * 1024
    # jsonl: many small rows (per-row overhead); json/csv: fewer, long captions (buffering).
    n, pad = (200_000, "") if fmt == "jsonl" else (40_000, "la " * 150)
    rows = (
        {"location": f"lmd/{i:06d}.mid", "caption": f"{pad}song {i}", "genre": "pop"}
        for i in range(n)
    )
    path = tmp_path / f"in.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "json":
        path.write_text("[" + ",\n".join(json.dumps(r) for r in rows) + "]")
    else:
        path.write_text(
            "location,caption,genre\n"
            + "".join(f"{r['location']},{r['caption']},pop\n" for r in rows)
        )
    assert path.stat().st_size > 1.5 * limit  # holding the file would break the limit
    source = InputSource(InputSpec(path))
    tracemalloc.start()
    try:
        count = sum(1 for _ in source.iter_records())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == n
    assert peak < limit, f"peak {peak / 1e6:.1f} MB for a {path.stat().st_size / 1e6:.1f} MB file"
