"""The record every stage receives, and the row status vocabulary.

``idx`` is the 0-based position of the row in the input file: the key that ties stages, shards,
checkpoints and final rows together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STATUS_OK = "ok"
STATUS_FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Record:
    idx: int
    id: str
    midi_path: str  # as written in the input file
    resolved_path: str  # absolute path the MIDI stage opens
    caption: str | None  # None when missing or undecodable (see caption_error)
    caption_error: str | None = None  # e.g. "invalid UTF-8 at byte 17" from the reader
    row_error: str | None = None  # the input row itself is malformed (bad JSON, no MIDI path, ...)
    extra: dict[str, Any] = field(default_factory=dict)  # other input columns, carried to output


@dataclass(frozen=True, slots=True)
class RecordFailure:
    """How a record failed in one stage; stored as the row's error_type / error columns."""

    error_type: str  # short stable name, e.g. "missing_file", "corrupt_midi", "empty_caption"
    error: str  # human-readable detail
