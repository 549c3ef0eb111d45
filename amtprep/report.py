"""A self-contained HTML report with plots of the final dataset and its failures.

Public API:
    write_report(output_dir, statistics, final_files, failures_file, leakage_file=None)
    GM_PROGRAM_NAMES        the 128 General MIDI program names (index 128 means drums)
    program_name(program) -> str

``<output_dir>/report.html`` embeds its plots as base64 SVG images (``svgplot``: bar charts written as
text, no plotting library), so it can be mailed or opened anywhere and needs nothing beyond the
default install.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from amtprep.svgplot import column_chart, row_chart

logger = logging.getLogger(__name__)

DRUMS_PROGRAM = 128
GM_PROGRAM_NAMES = (
    "Acoustic Grand Piano", "Bright Acoustic Piano", "Electric Grand Piano", "Honky-tonk Piano",
    "Electric Piano 1", "Electric Piano 2", "Harpsichord", "Clavinet", "Celesta", "Glockenspiel",
    "Music Box", "Vibraphone", "Marimba", "Xylophone", "Tubular Bells", "Dulcimer", "Drawbar Organ",
    "Percussive Organ", "Rock Organ", "Church Organ", "Reed Organ", "Accordion", "Harmonica",
    "Tango Accordion", "Acoustic Guitar (nylon)", "Acoustic Guitar (steel)", "Electric Guitar (jazz)",
    "Electric Guitar (clean)", "Electric Guitar (muted)", "Overdriven Guitar", "Distortion Guitar",
    "Guitar Harmonics", "Acoustic Bass", "Electric Bass (finger)", "Electric Bass (pick)",
    "Fretless Bass", "Slap Bass 1", "Slap Bass 2", "Synth Bass 1", "Synth Bass 2", "Violin", "Viola",
    "Cello", "Contrabass", "Tremolo Strings", "Pizzicato Strings", "Orchestral Harp", "Timpani",
    "String Ensemble 1", "String Ensemble 2", "Synth Strings 1", "Synth Strings 2", "Choir Aahs",
    "Voice Oohs", "Synth Voice", "Orchestra Hit", "Trumpet", "Trombone", "Tuba", "Muted Trumpet",
    "French Horn", "Brass Section", "Synth Brass 1", "Synth Brass 2", "Soprano Sax", "Alto Sax",
    "Tenor Sax", "Baritone Sax", "Oboe", "English Horn", "Bassoon", "Clarinet", "Piccolo", "Flute",
    "Recorder", "Pan Flute", "Blown Bottle", "Shakuhachi", "Whistle", "Ocarina", "Lead 1 (square)",
    "Lead 2 (sawtooth)", "Lead 3 (calliope)", "Lead 4 (chiff)", "Lead 5 (charang)", "Lead 6 (voice)",
    "Lead 7 (fifths)", "Lead 8 (bass + lead)", "Pad 1 (new age)", "Pad 2 (warm)", "Pad 3 (polysynth)",
    "Pad 4 (choir)", "Pad 5 (bowed)", "Pad 6 (metallic)", "Pad 7 (halo)", "Pad 8 (sweep)",
    "FX 1 (rain)", "FX 2 (soundtrack)", "FX 3 (crystal)", "FX 4 (atmosphere)", "FX 5 (brightness)",
    "FX 6 (goblins)", "FX 7 (echoes)", "FX 8 (sci-fi)", "Sitar", "Banjo", "Shamisen", "Koto",
    "Kalimba", "Bagpipe", "Fiddle", "Shanai", "Tinkle Bell", "Agogo", "Steel Drums", "Woodblock",
    "Taiko Drum", "Melodic Tom", "Synth Drum", "Reverse Cymbal", "Guitar Fret Noise", "Breath Noise",
    "Seashore", "Bird Tweet", "Telephone Ring", "Helicopter", "Applause", "Gunshot",
)  # fmt: skip

NUMERIC_COLUMNS = ("duration_s", "n_notes", "tempo_bpm", "n_tokens")
LABEL_COLUMNS = ("estimated_key", "time_signature")
TOP_INSTRUMENTS = 20
TOP_LABELS = 24  # all 24 keys fit
COLOR = "#3a6ea5"
ACCENT = "#d9822b"
STAGE_COLORS = {"midi": "#3a6ea5", "text": "#d9822b", "merge": "#6a994e"}


def program_name(program: int) -> str:
    if program == DRUMS_PROGRAM:
        return "Drums"
    return GM_PROGRAM_NAMES[program] if 0 <= program < 128 else f"program {program}"


@dataclass
class _FinalData:
    rows: int = 0
    numbers: dict[str, list[np.ndarray]] = field(default_factory=dict)
    labels: dict[str, Counter[str]] = field(default_factory=dict)
    programs: Counter[int] = field(default_factory=Counter)  # files using each program
    has_programs: bool = False

    def values(self, column: str) -> np.ndarray:
        chunks = self.numbers.get(column, [])
        values = np.concatenate(chunks).astype(np.float64) if chunks else np.array([])
        return values[np.isfinite(values)]


def _read_final(final_files: Iterable[Path]) -> _FinalData:
    """Only the plotted columns, batch by batch (never the embedding or the note sequence)."""
    data = _FinalData()
    for path in final_files:
        parquet = pq.ParquetFile(path)
        data.rows += parquet.metadata.num_rows
        names = set(parquet.schema_arrow.names)
        wanted = [c for c in (*NUMERIC_COLUMNS, *LABEL_COLUMNS, "programs") if c in names]
        if not wanted:
            continue
        for batch in parquet.iter_batches(batch_size=65_536, columns=wanted):
            for column in wanted:
                array = batch.column(column)
                if column in NUMERIC_COLUMNS:
                    values = array.drop_null().to_numpy(zero_copy_only=False)
                    data.numbers.setdefault(column, []).append(values)
                elif column in LABEL_COLUMNS:
                    counts = pc.value_counts(array.drop_null())
                    counter = data.labels.setdefault(column, Counter())
                    for value, count in zip(
                        counts.field("values").to_pylist(),
                        counts.field("counts").to_pylist(),
                        strict=True,
                    ):
                        counter[str(value)] += count
                else:
                    data.has_programs = True
                    _count_programs(array, data.programs)
    return data


def _count_programs(array: Any, counter: Counter[int]) -> None:
    """Count each program once per file, however many tracks use it."""
    programs = pc.list_flatten(array).to_numpy(zero_copy_only=False).astype(np.int64)
    if programs.size == 0:
        return
    rows = pc.list_parent_indices(array).to_numpy(zero_copy_only=False).astype(np.int64)
    pairs = np.unique(rows * 1024 + programs)
    for program, count in zip(*np.unique(pairs % 1024, return_counts=True), strict=True):
        counter[int(program)] += int(count)


@dataclass
class _Failures:
    by_type: Counter[tuple[str, str]] = field(default_factory=Counter)  # (error_type, stage)
    examples: dict[tuple[str, str], str] = field(default_factory=dict)


def _read_failures(failures_file: Path | None) -> _Failures:
    failures = _Failures()
    if failures_file is None or not Path(failures_file).exists():
        return failures
    parquet = pq.ParquetFile(failures_file)
    wanted = [c for c in ("stage", "error_type", "error") if c in parquet.schema_arrow.names]
    for batch in parquet.iter_batches(batch_size=65_536, columns=wanted):
        columns = {c: batch.column(c).to_pylist() for c in wanted}
        for i in range(batch.num_rows):
            key = (
                columns.get("error_type", [None] * batch.num_rows)[i] or "unknown",
                columns.get("stage", [None] * batch.num_rows)[i] or "unknown",
            )
            failures.by_type[key] += 1
            if key not in failures.examples and columns.get("error"):
                failures.examples[key] = columns["error"][i] or ""
    return failures


# --- plots ---------------------------------------------------------------------------------------


def _histogram(values: np.ndarray, title: str, xlabel: str, integer: bool, unit: str) -> bytes:
    """Histogram with a median line; a long tail beyond the 99.5th percentile is folded into the
    last bar (and said so) so a handful of outliers cannot squash the interesting part."""
    low, high = float(values.min()), float(values.max())
    cap = float(np.percentile(values, 99.5))
    folded = int((values > cap).sum()) if high > 2 * cap and cap > low else 0
    if folded:
        high = cap
    if integer:  # whole-number bins centred on the values; as many as the data supports, <= 60
        auto = len(np.histogram_bin_edges(values[values <= high], bins="auto")) - 1
        width = max(1, math.ceil((high - low + 1) / min(60, max(auto, 10))))
        edges = np.arange(math.floor(low), math.floor(high) + width + 1, width) - 0.5
    elif high > low:
        edges = np.histogram_bin_edges(values[values <= high], bins="auto")
        edges = np.linspace(low, high, min(max(len(edges), 11), 61))
    else:
        edges = np.array([low - 0.5, low + 0.5])
    counts, _ = np.histogram(np.minimum(values, edges[-1]), bins=edges)
    median = float(np.median(values))
    legend = [(f"median {median:,.4g} {unit}", ACCENT, "dash")]
    if folded:
        legend.append((f"{folded:,} values > {cap:,.4g} {unit} in the last bar", ACCENT, "none"))
    return column_chart(
        counts.tolist(),
        edges=edges.tolist(),
        title=f"{title} (n={values.size:,})",
        xlabel=xlabel,
        ylabel="files",
        colors=COLOR,
        vline=(median, ACCENT),
        legend=legend,
    ).encode()


def _bars(
    counts: Counter[str],
    title: str,
    xlabel: str,
    colors: list[str] | None = None,
    legend: dict[str, str] | None = None,
) -> bytes:
    items = counts.most_common(TOP_LABELS)
    other = sum(counts.values()) - sum(c for _, c in items)
    if other:
        items.append((f"other ({len(counts) - TOP_LABELS})", other))
    colors = (colors or [COLOR] * len(counts))[:TOP_LABELS] + ["#999"] * bool(other)
    return column_chart(
        [c for _, c in items],
        labels=[label for label, _ in items],
        title=f"{title} (n={sum(counts.values()):,})",
        xlabel=xlabel,
        ylabel="files",
        colors=colors,
        legend=[(label, color, "box") for label, color in (legend or {}).items()],
        width=700 if len(items) <= 12 else 900,
        height=380,
    ).encode()


def _key_bars(counts: Counter[str]) -> bytes:
    colors = [ACCENT if "minor" in k else COLOR for k, _ in counts.most_common(TOP_LABELS)]
    return _bars(counts, "Estimated key", "key", colors, legend={"major": COLOR, "minor": ACCENT})


def _instruments(programs: Counter[int], rows: int) -> bytes:
    items = programs.most_common(TOP_INSTRUMENTS)  # largest at the top
    labels = [f"{program_name(p)} ({p})" if p != DRUMS_PROGRAM else "Drums" for p, _ in items]
    shown = f"top {len(items)} of {len(programs)}" if len(programs) > len(items) else "all"
    drums = [c if p == DRUMS_PROGRAM else 0 for p, c in items]
    others = [0 if p == DRUMS_PROGRAM else c for p, c in items]
    series = [("programs", others, COLOR)] + [("drums", drums, ACCENT)] * any(drums)
    return row_chart(
        labels,
        series,
        title=f"Instruments: files using each GM program ({shown})",
        xlabel=f"files (of {rows:,})",
    ).encode()


def _failure_bars(failures: _Failures) -> bytes:
    types = Counter()
    for (error_type, _), count in failures.by_type.items():
        types[error_type] += count
    order = [t for t, _ in types.most_common()]
    stages = sorted({stage for _, stage in failures.by_type})
    series = [
        (
            stage,
            [failures.by_type.get((t, stage), 0) for t in order],
            STAGE_COLORS.get(stage, "#888"),
        )
        for stage in stages
    ]
    return row_chart(
        order,
        series,
        title=f"Failures by error type (n={sum(types.values()):,})",
        xlabel="records",
        totals=True,
        legend=True,  # which stage failed them, even when only one did
    ).encode()


# --- HTML ----------------------------------------------------------------------------------------


def _format(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return html.escape(str(value))
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"


def _flatten(statistics: dict[str, Any], prefix: str = "", depth: int = 0) -> list[tuple[str, Any]]:
    """Scalar entries of the statistics dict, nested dicts as dotted keys; lists are left out."""
    rows: list[tuple[str, Any]] = []
    for key, value in statistics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and depth < 2:
            rows.extend(_flatten(value, f"{name}.", depth + 1))
        elif isinstance(value, (str, int, float, bool)) or value is None:
            rows.append((name, value))
    return rows


def _counts_table(statistics: dict[str, Any], rows: int, failures: _Failures) -> str:
    entries: list[tuple[str, Any]] = [("rows in the final dataset", rows)]
    per_stage = Counter()
    for (_, stage), count in failures.by_type.items():
        per_stage[stage] += count
    entries += [(f"failures in stage {stage}", n) for stage, n in sorted(per_stage.items())]
    entries += _flatten(statistics)
    body = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{_format(v)}</td></tr>" for k, v in entries)
    return f"<table class='counts'>\n{body}\n</table>"


def _failure_table(failures: _Failures) -> str:
    if not failures.by_type:
        return ""
    rows = []
    for (error_type, stage), count in failures.by_type.most_common():
        example = failures.examples.get((error_type, stage), "")
        example = example if len(example) <= 160 else example[:157] + "..."
        rows.append(f"<tr><td>{html.escape(error_type)}</td><td>{html.escape(stage)}</td>"
                    f"<td>{count:,}</td><td><code>{html.escape(example)}</code></td></tr>")  # fmt: skip
    head = "<tr><th>error type</th><th>stage</th><th>records</th><th>example</th></tr>"
    return f"<table class='failures'>\n{head}\n" + "\n".join(rows) + "\n</table>"


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-weight: 600; } h2 { margin-top: 2em; font-weight: 600; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.8em; text-align: left; vertical-align: top; }
table.counts td { text-align: right; font-variant-numeric: tabular-nums; }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 1.5em; }
.plots figure { margin: 0; } .plots img { width: 100%; border: 1px solid #eee; }
"""


LEAKAGE_ROWS = 50  # leaking group members listed in the report; leakage.parquet has them all


def _duplicates_section(statistics: dict[str, Any], leakage_file: Path | None) -> str:
    """Counts of ``statistics["duplicates"]`` and the first leaking groups' members."""
    dups = statistics.get("duplicates")
    if not dups:
        return ""
    rows = "\n".join(
        f"<tr><th>{html.escape(k)}</th><td>{_format(v)}</td></tr>" for k, v in dups.items()
    )
    parts = ["<h2>Duplicates and leakage</h2>", f"<table class='counts'>\n{rows}\n</table>"]
    if leakage_file is not None and Path(leakage_file).exists() and dups.get("leakage_rows"):
        table = pq.read_table(leakage_file).slice(0, LEAKAGE_ROWS).to_pylist()
        names = ("group", "idx", "id", "midi_path", "test_set", "duplicate_kind")
        head = "".join(f"<th>{n}</th>" for n in names)
        body = "\n".join(
            "<tr>" + "".join(f"<td>{_format(r.get(n))}</td>" for n in names) + "</tr>"
            for r in table
        )
        more = dups["leakage_rows"] - len(table)
        note = f"<p>{more:,} more rows in leakage.parquet</p>" if more > 0 else ""
        parts.append(
            "<p>Groups of the same music on both sides of the input's split:</p>"
            f"<table class='leakage'>\n<tr>{head}</tr>\n{body}\n</table>{note}"
        )
    return "\n".join(parts)


def _html(tables: str, plots: list[tuple[str, bytes]], failure_table: str) -> str:
    figures = "\n".join(
        f"<figure><img alt='{html.escape(title)}' src='data:image/svg+xml;base64,"
        f"{base64.b64encode(svg).decode('ascii')}'></figure>"
        for title, svg in plots
    )
    failures = f"<h2>Failures</h2>\n{failure_table}" if failure_table else ""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>amtprep report</title><style>{_CSS}</style></head><body>\n"
        f"<h1>amtprep report</h1>\n<h2>Counts</h2>\n{tables}\n"
        f"<h2>Distributions</h2>\n<div class='plots'>\n{figures}\n</div>\n{failures}\n"
        "</body></html>\n"
    )


def _plots(data: _FinalData, failures: _Failures) -> list[tuple[str, bytes]]:
    plots: list[tuple[str, bytes]] = []
    specs = (  # column, title, x label, integer bins, unit
        ("duration_s", "Duration", "duration (s)", False, "s"),
        ("n_notes", "Notes per file", "notes", True, "notes"),
        ("tempo_bpm", "Initial tempo", "tempo (bpm)", False, "bpm"),
        ("n_tokens", "Caption length", "caption length (tokens)", True, "tokens"),
    )
    for column, title, xlabel, integer, unit in specs:
        values = data.values(column)
        if values.size:
            plots.append((title, _histogram(values, title, xlabel, integer, unit)))
    if data.labels.get("estimated_key"):
        plots.append(("Estimated key", _key_bars(data.labels["estimated_key"])))
    if data.labels.get("time_signature"):
        counts = data.labels["time_signature"]
        plots.append(("Time signature", _bars(counts, "Time signature", "time signature")))
    if data.programs:
        plots.append(("Instruments", _instruments(data.programs, data.rows)))
    if failures.by_type:
        plots.append(("Failures by error type", _failure_bars(failures)))
    return plots


def write_report(
    output_dir: Path,
    statistics: dict[str, Any],
    final_files: list[Path],
    failures_file: Path | None,
    leakage_file: Path | None = None,
) -> Path:
    """Write ``<output_dir>/report.html`` and return its path.

    Columns missing from the final files are skipped, not errors. Raises ``OSError`` when the
    report cannot be written.
    """
    data = _read_final(final_files)
    failures = _read_failures(failures_file)
    page = _html(
        _counts_table(statistics or {}, data.rows, failures)
        + _duplicates_section(statistics or {}, leakage_file),
        _plots(data, failures),
        _failure_table(failures),
    )
    path = Path(output_dir) / "report.html"
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(page, encoding="utf-8")
    os.replace(temporary, path)
    logger.debug("report built in %s", path)  # the pipeline logs where it is published
    return path
