"""One default for each setting, whichever entry point builds the configuration."""

from __future__ import annotations

import inspect
from pathlib import Path

from amtprep.cli import build_parser, config_from_args
from amtprep.config import ROWS_PER_FINAL_SHARD, RunConfig
from amtprep.merge import merge_stages


def test_rows_per_final_file_has_one_default():
    args = build_parser().parse_args(["--input_file", "x.jsonl"])
    assert config_from_args(args).rows_per_final_shard == ROWS_PER_FINAL_SHARD
    assert RunConfig(Path("x"), Path("y")).rows_per_final_shard == ROWS_PER_FINAL_SHARD
    default = inspect.signature(merge_stages).parameters["rows_per_shard"].default
    assert default == ROWS_PER_FINAL_SHARD == 10_000
