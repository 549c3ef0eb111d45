"""Named exception types.

Operator-facing errors (``AmtprepError`` subclasses) are printed by the CLI as one line and turn
into a non-zero exit; each also inherits the matching built-in so callers can catch either.
Exit codes: 0 done, 1 unexpected error, 2 usage (argparse), 3 ``LockHeldError``, 4 any other
operator error, 128 + signal number ``Interrupted``.
Per-record problems are never raised out of a stage: they become failed rows (see ``records``).
"""

from __future__ import annotations


class AmtprepError(Exception):
    """Base class: a problem the operator must fix; the message says what and how."""

    exit_code = 4  # not 2: argparse exits 2 for a usage error, and scripts must tell them apart


class InputFileError(AmtprepError, OSError):
    """The input file cannot be read, has an unknown format, or lacks a required column."""


class OutputDirError(AmtprepError, OSError):
    """The output directory cannot be created or written."""


class ModelLoadError(AmtprepError, OSError):
    """The text model cannot be found or loaded."""


class ConfigError(AmtprepError, ValueError):
    """Invalid combination of settings."""


class CheckpointError(AmtprepError):
    """A checkpoint is missing when required, or cannot be used."""


class FingerprintMismatchError(CheckpointError):
    """A resume was attempted against a different input or incompatible settings."""


class LockHeldError(AmtprepError):
    """Another live run holds the output directory."""

    exit_code = 3


class LeaseLostError(LockHeldError):
    """Another run took over this run's lease (it had expired): stop writing at once."""


class LockUnsupportedError(AmtprepError, OSError):
    """The output directory's file system cannot lock files (NFS without lockd, some FUSE mounts)."""


class DiskWriteError(AmtprepError, OSError):
    """Writing a shard or checkpoint failed (disk full, I/O error, read-only)."""


class ObjectExistsError(AmtprepError, FileExistsError):
    """A create-only write found its name taken: another writer published it first."""


class Interrupted(AmtprepError):
    """The run stopped on SIGINT/SIGTERM after committing what it had."""

    def __init__(self, signum: int, message: str = "") -> None:
        super().__init__(message or f"interrupted by signal {signum}")
        self.signum = signum
        self.exit_code = 128 + signum
