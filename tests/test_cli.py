"""The command line as a script sees it: exit codes and usage errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from amtprep.cli import main


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
