"""The per-stage commit log: an append-only, fsynced file of JSON lines, the commit point.

A batch is committed when its log line is durable (``write`` + ``fdatasync``), after its shard
was published. Appending costs the same at line 30,000 as at line 10: nothing already written is
read or rewritten. Each line carries a checksum of itself, so a line torn by a crash (always the
last one) or damaged later is recognised and left out; recovery then treats its shard as an
orphan and checks the shard itself.

Where there is no append (object storage), the same entries become one create-only object each
(``_log/000000042.json``, first writer wins), read in sequence order; see docs/architecture.md.

Public: ``CommitLog``, ``LogRead``, ``encode_line``, ``LOG_NAME``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amtprep.io.crashpoints import crashpoint
from amtprep.io.fsutil import atomic_write, disk_error, fsync_dir

LOG_NAME = "_commits.jsonl"


_PREFIX = b'{"crc": "'
_CRC_LEN = 16


def _crc(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()[:_CRC_LEN]


def encode_line(body: dict[str, Any]) -> bytes:
    """One log line: ``{"crc": "<sha256[:16] of the rest>", ...body}``, newline-terminated.

    The checksum covers the body's own bytes, so checking a line needs no re-serialising.
    """
    payload = json.dumps(body, sort_keys=True).encode()
    return _PREFIX + _crc(payload).encode() + b'", ' + payload[1:] + b"\n"


def decode_line(raw: bytes) -> tuple[dict[str, Any], str] | None:
    """(body, checksum) of a line, or None when it is torn, garbled or its checksum differs."""
    raw = raw.rstrip(b"\n")
    head = len(_PREFIX) + _CRC_LEN
    if not raw.startswith(_PREFIX) or raw[head : head + 3] != b'", ':
        return None
    crc = raw[len(_PREFIX) : head]
    if _crc(b"{" + raw[head + 3 :]).encode() != crc:
        return None
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(body, dict):
        return None
    body.pop("crc", None)
    return body, crc.decode()


@dataclass
class LogRead:
    entries: list[dict[str, Any]] = field(default_factory=list)
    damaged_lines: list[int] = field(default_factory=list)  # 1-based line numbers left out
    torn_tail: int = 0  # bytes of an unterminated last line (cut off by a crash)
    last_crc: str = ""  # checksum of the last intact line: names the committed state
    size: int = 0  # bytes of whole lines


class CommitLog:
    """Append-only JSON lines at ``path``; one writer (the lock holder) at a time."""

    def __init__(self, path: Path, *, crash_tag: str = "log") -> None:
        self.path = path
        self.crash_tag = crash_tag
        self._fd: int | None = None

    def exists(self) -> bool:
        return self.path.exists()

    def read(self) -> LogRead:
        """Every intact line in order; raises OSError only when the file cannot be read."""
        out = LogRead()
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return out
        end = data.rfind(b"\n") + 1
        out.torn_tail = len(data) - end
        out.size = end
        for n, raw in enumerate(data[:end].splitlines(), 1):
            decoded = decode_line(raw)
            if decoded is None:
                out.damaged_lines.append(n)
            else:
                out.entries.append(decoded[0])
                out.last_crc = decoded[1]
        return out

    def cut_torn_tail(self, size: int) -> None:
        """Drop bytes after the last whole line, so the next append starts a clean line."""
        try:
            with open(self.path, "r+b") as fh:
                fh.truncate(size)
                os.fsync(fh.fileno())
        except OSError as exc:
            raise disk_error(exc, self.path) from exc

    def rewrite(self, entries: list[dict[str, Any]]) -> None:
        """Replace the whole log atomically (only when rebuilding it from the shards)."""
        self.close()
        atomic_write(self.path, b"".join(encode_line(e) for e in entries), crash_tag=self.crash_tag)

    def append(self, body: dict[str, Any]) -> str:
        """Make one entry durable and return its checksum; raises DiskWriteError.

        The entry is committed when this returns.
        """
        line = encode_line(body)
        crc = line[len(_PREFIX) : len(_PREFIX) + _CRC_LEN].decode()
        try:
            if self._fd is None:
                created = not self.path.exists()
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                if created:
                    fsync_dir(self.path.parent)
            written = os.write(self._fd, line)
            if written != len(line):  # a short write on a full disk: undo it, then fail
                os.ftruncate(self._fd, os.fstat(self._fd).st_size - written)
                raise OSError(28, os.strerror(28))
            crashpoint(f"{self.crash_tag}.written")
            os.fdatasync(self._fd)
            crashpoint(f"{self.crash_tag}.fsynced")
        except OSError as exc:
            raise disk_error(exc, self.path) from exc
        return crc

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
