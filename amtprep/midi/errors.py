"""Per-file MIDI problems as named exceptions; the stage turns each into a failed row.

Public API: ``MidiFileError`` (base, carries ``error_type``) and one subclass per stable
``error_type`` string. Worker-level outcomes (``timeout``, ``worker_crashed``) and
``malformed_row`` never exist as exceptions: the pool and the stage write them directly.
"""

from __future__ import annotations


class MidiFileError(Exception):
    """A file that cannot become a feature row; ``error_type`` is the stable short name."""

    error_type = "corrupt_midi"


class MissingFileError(MidiFileError, FileNotFoundError):
    error_type = "missing_file"


class UnreadableFileError(MidiFileError, OSError):
    error_type = "unreadable_file"


class InvalidPathError(MidiFileError, ValueError):
    """A path no file can have (a NUL byte): the input row is wrong, not the file system."""

    error_type = "invalid_path"


class EmptyFileError(MidiFileError, ValueError):
    error_type = "empty_file"


class TooLargeError(MidiFileError, ValueError):
    error_type = "too_large"


class NotMidiError(MidiFileError, ValueError):
    error_type = "not_midi"


class TruncatedMidiError(MidiFileError, EOFError):
    error_type = "truncated"


class CorruptMidiError(MidiFileError, ValueError):
    error_type = "corrupt_midi"


class BackendRejectedError(MidiFileError):
    """symusic refused the file; ``auto`` retries it with mido."""

    error_type = "corrupt_midi"


class NeedsMidoError(BackendRejectedError):
    """symusic could parse the file but not give mido-identical output; every backend uses mido."""


class DataByteRangeError(CorruptMidiError):
    """mido found a data byte > 127; the mido backend retries with ``clip=True``."""
