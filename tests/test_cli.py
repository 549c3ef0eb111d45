"""The command line as a script sees it: exit codes and usage errors."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from amtprep.cli import main
from amtprep.io import lock


def test_operator_error_exits_4_and_a_usage_error_exits_2(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.jsonl"
    code = main(
        ["--input_file", str(missing), "--output_dir", str(tmp_path / "out"), "--no_progress"]
    )
    assert code == 4
    assert "input file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["--input_file", str(missing), "--no_such_flag"])
    assert usage.value.code == 2


def test_output_dir_without_file_locks_is_an_operator_error(
    corpus: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(lock.fcntl, "flock", no_locks)  # an NFS mount without lockd
    code = main(
        ["--input_file", str(corpus), "--output_dir", str(tmp_path / "out"), "--no_progress"]
    )
    err = capsys.readouterr().err
    assert code == 4, err
    assert "does not support file locks" in err and "unexpected" not in err


@pytest.mark.parametrize(
    ("flags", "hint"),
    [
        (["--show_progress"], "drop --input_file to see progress, or drop --show_progress to run"),
        (["--list-checkpoints"], "drop --input_file to list them, or drop --list_checkpoints"),
        (["--reset_progress", "text"], "drop --input_file to reset, or drop --reset_progress"),
    ],
)
def test_housekeeping_flag_beside_input_file_is_a_usage_error(
    corpus: Path, tmp_path: Path, capsys, flags, hint
) -> None:
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as usage:
        main(["--input_file", str(corpus), "--output_dir", str(out), *flags])
    assert usage.value.code == 2
    err = capsys.readouterr().err
    assert "runs nothing" in err and hint in err
    assert not out.exists()  # nothing was run, reset or created


def test_a_run_without_input_file_is_a_usage_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as usage:
        main(["--output_dir", str(tmp_path / "out")])
    assert usage.value.code == 2
    assert "--input_file is required" in capsys.readouterr().err


def test_log_level_warning_prints_no_batch_lines(corpus: Path, tmp_path: Path, tiny_bert: Path):
    from tests.helpers import run_args, run_cli

    proc = run_cli(*run_args(corpus, tmp_path / "out", tiny_bert, "--log_level", "warning"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert " INFO " not in proc.stderr and "committed" not in proc.stderr
    assert "batch 1/4 committed" in (tmp_path / "out" / "amtprep.log").read_text()  # still logged


def test_a_midi_worker_process_never_imports_pandas():
    """pyarrow would import it on its first pa.array (0.4-0.8 s per worker start)."""
    import subprocess
    import sys

    code = (
        "import sys; from amtprep.startup import block_pandas; block_pandas(); "
        "import numpy as np, pyarrow as pa; from amtprep.midi.extract import extract_file; "
        "assert pa.array(np.arange(3)).type == pa.int64() and pa.array(['a']).type == pa.string(); "
        "assert 'pandas' not in sys.modules, 'pandas was imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
