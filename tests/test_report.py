"""report.html: one well-formed embedded SVG per plot, tolerant of missing columns, with no
plotting library installed."""

from __future__ import annotations

import base64
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from amtprep.report import program_name, write_report
from amtprep.svgplot import nice_ticks

SVG_RE = re.compile(r"<img alt='([^']*)' src='data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)'>")
NS = "{http://www.w3.org/2000/svg}"


def _final_table(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    programs = [sorted({0, *rng.integers(0, 129, rng.integers(1, 5)).tolist()}) for _ in range(n)]
    return pa.table({
        "idx": np.arange(n),
        "duration_s": rng.gamma(3.0, 30.0, n),
        "n_notes": rng.integers(10, 5000, n),
        "tempo_bpm": rng.normal(120, 20, n),
        "estimated_key": rng.choice(["C major", "A minor", "G major", "E minor"], n),
        "time_signature": rng.choice(["4/4", "3/4", "6/8"], n),
        "programs": pa.array(programs, pa.list_(pa.int16())),
        "n_tokens": rng.integers(12, 120, n),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(rng.random(n * 4, np.float32)), 4),
    })  # fmt: skip


def _failures(path: Path) -> Path:
    pq.write_table(
        pa.table({
            "idx": [3, 7, 9],
            "stage": ["midi", "midi", "text"],
            "error_type": ["corrupt_midi", "corrupt_midi", "empty_caption"],
            "error": ["bad header <MThd>", "bad header", "caption is empty"],
        }),
        path,
    )  # fmt: skip
    return path


def _images(report: Path) -> dict[str, ET.Element]:
    images = {}
    for alt, data in SVG_RE.findall(report.read_text(encoding="utf-8")):
        images[alt] = ET.fromstring(base64.b64decode(data))  # raises when not well-formed XML
    return images


def _texts(svg: ET.Element) -> list[str]:
    return [t.text or "" for t in svg.iter(f"{NS}text")]


def _bars(svg: ET.Element) -> list[ET.Element]:
    return [r for r in svg.iter(f"{NS}rect") if r.get("fill") != "white"]


def test_full_report_has_every_plot_as_a_well_formed_svg(tmp_path: Path) -> None:
    table = _final_table(300)
    files = [tmp_path / "data-00000-of-00002.parquet", tmp_path / "data-00001-of-00002.parquet"]
    pq.write_table(table.slice(0, 200), files[0])
    pq.write_table(table.slice(200), files[1])
    statistics = {"wall_time_s": 12.5, "midi": {"records_per_s": 830.25}, "columns": [{"x": 1}]}

    report = write_report(tmp_path, statistics, files, _failures(tmp_path / "failures.parquet"))

    assert report == tmp_path / "report.html"
    images = _images(report)
    assert set(images) == {
        "Duration", "Notes per file", "Initial tempo", "Caption length", "Estimated key",
        "Time signature", "Instruments", "Failures by error type",
    }  # fmt: skip
    for svg in images.values():
        assert svg.tag == f"{NS}svg" and int(svg.get("width")) >= 400
        assert int(svg.get("height")) >= 150 and _bars(svg)
    # what the plots say: totals, labels and the median legend
    assert "Duration (n=300)" in _texts(images["Duration"])
    assert any(t.startswith("median ") for t in _texts(images["Duration"]))
    hist_rects = _bars(images["Notes per file"])
    assert len(hist_rects) >= 10  # many bins, not one
    keys = _texts(images["Estimated key"])
    assert {"C major", "A minor", "G major", "E minor", "major", "minor"} <= set(keys)
    failures = images["Failures by error type"]
    assert {"corrupt_midi", "empty_caption", "midi", "text", "2", "1"} <= set(_texts(failures))
    page = report.read_text(encoding="utf-8")
    assert "<th>rows in the final dataset</th><td>300</td>" in page
    assert "<th>failures in stage midi</th><td>2</td>" in page
    assert "<th>midi.records_per_s</th><td>830.250</td>" in page
    assert "&lt;MThd&gt;" in page and "<MThd>" not in page  # error text is escaped
    assert "http" not in page.replace("http-equiv", "")  # self-contained: nothing fetched


def test_missing_columns_and_failures_are_skipped_not_errors(tmp_path: Path) -> None:
    pq.write_table(
        pa.table({"idx": [0, 1, 2], "duration_s": [5.0, 5.0, 5.0]}), tmp_path / "d.parquet"
    )
    report = write_report(tmp_path, {}, [tmp_path / "d.parquet"], tmp_path / "absent.parquet")
    assert report is not None
    assert set(_images(report)) == {"Duration"}
    assert "Failures" not in report.read_text(encoding="utf-8").split("<h2>Distributions</h2>")[1]


def test_empty_dataset_still_writes_a_report(tmp_path: Path) -> None:
    empty = _final_table(0)
    pq.write_table(empty, tmp_path / "d.parquet")
    report = write_report(tmp_path, {"rows": 0}, [tmp_path / "d.parquet"], None)
    assert report is not None and _images(report) == {}
    assert "<th>rows in the final dataset</th><td>0</td>" in report.read_text(encoding="utf-8")


def test_the_report_needs_no_plotting_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pq.write_table(_final_table(5), tmp_path / "d.parquet")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    report = write_report(tmp_path, {}, [tmp_path / "d.parquet"], None)
    assert report is not None and len(_images(report)) == 7


def test_histogram_bar_heights_are_the_counts(tmp_path: Path) -> None:
    pq.write_table(
        pa.table({"idx": range(6), "n_notes": [1, 1, 1, 2, 3, 3]}), tmp_path / "d.parquet"
    )
    svg = _images(write_report(tmp_path, {}, [tmp_path / "d.parquet"], None))["Notes per file"]
    heights = sorted(float(r.get("height")) for r in _bars(svg))
    assert len(heights) == 3  # values 1, 2, 3: one integer bin each
    assert heights[2] == pytest.approx(3 * heights[0], rel=1e-3)  # 3 files vs 1 file


@pytest.mark.parametrize(
    "top, integer, expected",
    [(7, True, [0, 2, 4, 6, 8]), (0.37, False, [0, 0.1, 0.2, 0.3, 0.4]), (0, True, [0, 1])],
)
def test_nice_ticks(top, integer, expected) -> None:
    assert nice_ticks(top, integer=integer) == pytest.approx(expected)


def test_program_names_follow_general_midi() -> None:
    assert program_name(0) == "Acoustic Grand Piano"
    assert program_name(33) == "Electric Bass (finger)"
    assert program_name(127) == "Gunshot"
    assert program_name(128) == "Drums"
