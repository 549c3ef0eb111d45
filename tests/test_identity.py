"""One identity, checked by every path that reads committed state (issue 10, findings 1 and 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from amtprep.cli import main
from tests.helpers import assert_same_output, run_args, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture()
def finished(corpus: Path, tmp_path: Path, tiny_bert: Path) -> Path:
    out = tmp_path / "out"
    assert main(run_args(corpus, out, tiny_bert)) == 0
    return out


def _copy_corpus(corpus: Path, dest: Path) -> Path:
    shutil.copytree(corpus.parent, dest)
    return dest / corpus.name


def test_merge_only_refuses_a_reordered_or_shorter_input(
    corpus, tmp_path, tiny_bert, finished, capsys
):
    stats_before = (finished / "statistics.json").read_text()
    changed = _copy_corpus(corpus, tmp_path / "changed")
    lines = changed.read_text().splitlines(keepends=True)
    changed.write_text("".join(reversed(lines)))
    moved_out = tmp_path / "moved"
    shutil.copytree(finished, moved_out, symlinks=True)
    args = run_args(
        changed, moved_out, tiny_bert, "--stages", "merge", "--midi_root", str(corpus.parent)
    )
    assert main(args) == 4
    err = capsys.readouterr().err
    assert "input file content" in err and "--force_restart" in err
    changed.write_text("".join(lines[:10]))  # shorter: refused the same way, no IndexError
    assert main(args) == 4
    assert "input file content" in capsys.readouterr().err
    assert (moved_out / "statistics.json").read_text() == stats_before  # nothing republished


def test_save_partial_and_retry_check_the_input_too(corpus, tmp_path, tiny_bert, finished, capsys):
    changed = _copy_corpus(corpus, tmp_path / "changed")
    changed.write_text("".join(reversed(changed.read_text().splitlines(keepends=True))))
    for flag in ("--save_partial", "--retry_failed"):
        args = run_args(changed, finished, tiny_bert, flag, "--midi_root", str(corpus.parent))
        assert main(args) == 4, flag
        assert "input file content" in capsys.readouterr().err


def _killed_after_two_batches(corpus: Path, out: Path, tiny_bert: Path) -> None:
    proc = run_cli(
        *run_args(corpus, out, tiny_bert), env={"AMTPREP_CRASH_AT": "midi.log.fsynced:3"}
    )
    assert proc.returncode == -9, proc.stderr[-2000:]


def test_resume_refuses_another_midi_root_or_id_column(corpus, tmp_path, tiny_bert, capsys):
    out = tmp_path / "out"
    _killed_after_two_batches(corpus, out, tiny_bert)
    log_before = (out / "midi" / "_commits.jsonl").read_bytes()
    empty = tmp_path / "empty_root"
    empty.mkdir()
    cont = ["--mode", "continue"]
    assert main(run_args(corpus, out, tiny_bert, *cont, "--midi_root", str(empty))) == 4
    err = capsys.readouterr().err
    assert "midi_root" in err and "--relocate_midi_root" in err
    assert main(run_args(corpus, out, tiny_bert, *cont, "--id_column", "genre")) == 4
    assert "id_column" in capsys.readouterr().err
    # a wrong root is refused even when relocation is asked for, naming the missing file
    assert (
        main(
            run_args(
                corpus, out, tiny_bert, *cont, "--midi_root", str(empty), "--relocate_midi_root"
            )
        )
        == 4
    )
    assert "cannot be read" in capsys.readouterr().err
    assert (out / "midi" / "_commits.jsonl").read_bytes() == log_before  # identity untouched


def test_relocated_midi_root_is_verified_recorded_and_gives_the_same_rows(
    corpus, tmp_path, tiny_bert, capsys
):
    ref = tmp_path / "ref"
    assert main(run_args(corpus, ref, tiny_bert)) == 0
    out = tmp_path / "out"
    _killed_after_two_batches(corpus, out, tiny_bert)
    new_root = tmp_path / "new_root"
    shutil.copytree(corpus.parent, new_root)
    args = run_args(corpus, out, tiny_bert, "--mode", "continue", "--midi_root", str(new_root))
    assert main([*args, "--relocate_midi_root"]) == 0
    assert "verified" in capsys.readouterr().err
    assert_same_output(ref, out)
    stats = json.loads((out / "statistics.json").read_text())
    changes = stats["stages"]["midi"]["identity_changes"]
    assert len(changes) == 1 and str(new_root) in changes[0]["reason"]
    log = [json.loads(x) for x in (out / "midi" / "_commits.jsonl").read_text().splitlines()]
    assert log[0]["kind"] == "begin" and log[0]["input"]["midi_root"] == str(corpus.parent)
    assert [e["kind"] for e in log].count("identity") == 1  # the history is kept, not overwritten
    assert main(args) == 0  # from now on the new root is the stored one


def test_merge_only_refuses_other_stage_settings(corpus, tmp_path, tiny_bert, finished, capsys):
    before = (finished / "statistics.json").read_text()
    assert main(run_args(corpus, finished, tiny_bert, "--stages", "merge", "--pooling", "cls")) == 4
    assert "pooling" in capsys.readouterr().err
    assert (
        main(run_args(corpus, finished, tiny_bert, "--stages", "merge", "--midi_backend", "mido"))
        == 4
    )
    assert "backend" in capsys.readouterr().err
    assert main(run_args(corpus, finished, tiny_bert, "--stages", "merge")) == 0  # same: fine
    assert (finished / "statistics.json").read_text() == before  # and up to date: kept


def test_a_setting_that_left_the_fingerprint_does_not_refuse_older_shards(tmp_path):
    from amtprep.commit.identity import identity_changes

    stored = {"input": {"sha256": "a"}, "settings": {"backend": "auto", "max_midi_bytes": 64}}
    assert identity_changes("midi", stored, {"sha256": "a"}, {"backend": "auto"}) == []
    assert identity_changes("midi", stored, {"sha256": "a"}, {"backend": "mido"}) != []
