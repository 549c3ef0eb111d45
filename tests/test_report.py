"""report.html: one decodable embedded PNG per plot, tolerant of missing columns and matplotlib."""

from __future__ import annotations

import base64
import io
import logging
import re
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from amtprep.report import program_name, write_report

PNG_RE = re.compile(r"<img alt='([^']*)' src='data:image/png;base64,([A-Za-z0-9+/=]+)'>")


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


def _images(report: Path) -> dict[str, Image.Image]:
    images = {}
    for alt, data in PNG_RE.findall(report.read_text(encoding="utf-8")):
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.load()  # raises when the PNG is truncated or corrupt
        images[alt] = image
    return images


def test_full_report_has_every_plot_as_a_decodable_png(tmp_path: Path) -> None:
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
    for image in images.values():
        assert image.format == "PNG" and image.width >= 400 and image.height >= 150
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


def test_without_matplotlib_logs_the_install_hint_and_returns_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pq.write_table(_final_table(5), tmp_path / "d.parquet")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with caplog.at_level(logging.WARNING, logger="amtprep.report"):
        assert write_report(tmp_path, {}, [tmp_path / "d.parquet"], None) is None
    assert "pip install 'amtprep[viz]' for report.html" in caplog.text
    assert not (tmp_path / "report.html").exists()


def test_program_names_follow_general_midi() -> None:
    assert program_name(0) == "Acoustic Grand Piano"
    assert program_name(33) == "Electric Bass (finger)"
    assert program_name(127) == "Gunshot"
    assert program_name(128) == "Drums"
