"""Re-runs and resumes do not re-walk the job (issue 10, finding 6), and stops tell the truth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amtprep.cli import main
from amtprep.io import input_formats
from tests.helpers import read_final, run_args, run_cli

pytestmark = pytest.mark.slow


def _published(out: Path) -> dict[str, tuple[int, int]]:
    paths = [*(out / "final").glob("*"), out / "failures.parquet", out / "statistics.json"]
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}


def test_rerun_of_a_finished_job_loads_no_model_and_rewrites_nothing(
    corpus, tmp_path, tiny_bert, capsys, monkeypatch
):
    out = tmp_path / "out"
    assert main(run_args(corpus, out, tiny_bert)) == 0
    before = _published(out)
    logs = {s: (out / s / "_commits.jsonl").read_bytes() for s in ("midi", "text")}
    capsys.readouterr()
    assert main(run_args(corpus, out, tiny_bert)) == 0
    said = capsys.readouterr().err
    assert "text model" not in said  # the model was never loaded
    assert "nothing to do" in said and "up to date" in said
    assert _published(out) == before
    assert {s: (out / s / "_commits.jsonl").read_bytes() for s in ("midi", "text")} == logs
    # a changed setting is still noticed: it builds the stage and refuses
    assert main(run_args(corpus, out, tiny_bert, "--pooling", "cls")) == 4
    # a new --rows_per_shard republishes from the same shards without running a stage, reading
    # the input once (the carried columns' types were inferred by the first merge)
    from amtprep import merge

    inferred = []
    real_infer = merge.infer_extra_schema
    monkeypatch.setattr(
        merge, "infer_extra_schema", lambda *a: inferred.append(1) or real_infer(*a)
    )
    assert main(run_args(corpus, out, tiny_bert, "--rows_per_shard", "7")) == 0
    assert inferred == []
    assert len(list((out / "final").glob("data-*.parquet"))) == 5
    assert read_final(out)[0].num_rows == 30


def test_resume_does_not_parse_the_rows_already_committed(corpus, tmp_path, tiny_bert, monkeypatch):
    out = tmp_path / "out"
    proc = run_cli(
        *run_args(corpus, out, tiny_bert, "--stages", "midi"),
        env={"AMTPREP_CRASH_AT": "midi.log.fsynced:3"},
    )
    assert proc.returncode == -9
    parsed: dict[int, int] = {}
    real = input_formats._parse_jsonl_line

    def counting(idx, line_no, line):
        parsed[idx] = parsed.get(idx, 0) + 1
        return real(idx, line_no, line)

    monkeypatch.setattr(input_formats, "_parse_jsonl_line", counting)
    assert main(run_args(corpus, out, tiny_bert, "--stages", "midi", "--mode", "continue")) == 0
    # (the log's first line is the stage's identity, so its 3rd append is the 2nd batch)
    # once to learn the columns when the file is opened; the committed rows 0..15 never again
    assert all(parsed[i] == 1 for i in range(16)), sorted(parsed.items())
    assert all(parsed[i] == 2 for i in range(16, 30)), parsed


def test_input_is_hashed_once_then_trusted_by_its_cheap_identity(
    corpus, tmp_path, tiny_bert, monkeypatch
):
    out = tmp_path / "out"
    assert main(run_args(corpus, out, tiny_bert, "--stages", "midi")) == 0
    from amtprep.io import readers

    hashed: list[Path] = []
    real = readers.file_sha256
    monkeypatch.setattr(readers, "file_sha256", lambda p: hashed.append(p) or real(p))
    assert main(run_args(corpus, out, tiny_bert, "--stages", "midi")) == 0
    assert hashed == []  # unchanged size, mtime, inode and edges: the stored hash is trusted
    corpus.write_text(corpus.read_text().replace('"caption": "', '"caption": "Changed. ', 1))
    assert main(run_args(corpus, out, tiny_bert, "--stages", "midi")) == 4  # content changed
    assert len(hashed) == 1


def test_save_partial_does_not_hide_the_error_that_stopped_the_run(corpus, tmp_path, tiny_bert):
    out = tmp_path / "out"
    proc = run_cli(
        *run_args(corpus, out, tiny_bert, "--save_partial"),
        env={"AMTPREP_FAIL_AT": "text.shard.written:2:ENOSPC"},
    )
    assert proc.returncode == 4, proc.stderr[-2000:]
    assert "disk is full" in proc.stderr and "unexpected error" not in proc.stderr
    stats = json.loads((out / "partial" / "statistics.json").read_text())
    assert stats["partial"] and stats["final_rows"] == 8  # the one text batch committed


def test_a_signal_during_a_merge_that_completes_exits_zero(corpus, tmp_path, tiny_bert):
    out = tmp_path / "out"
    proc = run_cli(
        *run_args(corpus, out, tiny_bert), env={"AMTPREP_SIGNAL_AT": "final.written:1:SIGTERM"}
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "nothing was left to do" in proc.stderr
    assert read_final(out)[0].num_rows == 30
    # a signal during a stage still stops the run with 128 + signal
    out2 = tmp_path / "out2"
    proc = run_cli(
        *run_args(corpus, out2, tiny_bert), env={"AMTPREP_SIGNAL_AT": "midi.log.fsynced:1:SIGTERM"}
    )
    assert proc.returncode == 143 and not (out2 / "final").exists()
