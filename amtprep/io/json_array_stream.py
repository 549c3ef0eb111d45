"""Incremental parser for a file holding one JSON array: elements one at a time, bounded memory.

Public API: ``JsonArrayStream(path)``, iterable over ``(line, element, clean)``; ``BOM``,
``SURROGATE``, ``Unreadable``, ``unreadable_reason(exc)``. Raises ``InputFileError`` when the
file is not one well-formed JSON array. An element Python's decoder cannot build although its
brackets balance (nested deeper than the recursion limit, an integer over
``sys.get_int_max_str_digits()`` digits) comes out as an ``Unreadable`` element: the array goes
on after it, as ``.jsonl`` goes on after a bad line.

``json.JSONDecoder.raw_decode`` parses each element from a text buffer refilled 1 MiB at a time
(decoded with an incremental UTF-8 decoder, ``surrogateescape``). Memory is about one element
plus a chunk, where ``json.load`` would hold the whole corpus as Python objects (~1-2 GB for 1M
MidiCaps rows). A stdlib-only design; ijson would do the same but is not a dependency.
"""

from __future__ import annotations

import codecs
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from amtprep.errors import InputFileError

BOM = b"\xef\xbb\xbf"
SURROGATE = re.compile("[\ud800-\udfff]")
_CHUNK = 1 << 20
_WS = re.compile(r"[ \t\n\r]*")
# Tokens for skipping an element the decoder cannot build: a whole string, a run of anything
# else that is not a bracket or separator (numbers, literals, colons), one bracket, separators.
_SKIP_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[^"\[\]{},\s]+|[\[{]|[\]}]|[,\s]+')
# A raw_decode error (or a number's end) this close to the end of the buffer may just mean the
# element goes on in the next chunk ("tr" of "true", "1." of "1.5"); refilling is always safe.
_TRUNCATION_SLACK = 16


@dataclass(frozen=True)
class Unreadable:
    """An array element that is valid JSON by its brackets but that Python cannot decode."""

    reason: str  # e.g. "nested too deeply"


def unreadable_reason(exc: BaseException) -> str:
    """Words for why ``json`` could not build a value (RecursionError, or the int digit limit)."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if "integer string conversion" in str(exc):
        return f"holds an integer longer than {sys.get_int_max_str_digits()} digits"
    return str(exc)


class JsonArrayStream:
    """Iterates ``(line, element, clean)`` over a JSON array file with a bounded buffer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._decoder = json.JSONDecoder()
        self._utf8 = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._buf = ""
        self._pos = 0
        self._eof = False
        self._line = 1  # line number at self._buf[self._line_pos]
        self._line_pos = 0

    def __iter__(self) -> Iterator[tuple[int, Any, bool]]:
        with open(self.path, "rb") as self._file:
            if self._next_char() != "[":
                found = "an empty file" if self._peek() == "" else f"{self._peek()!r}"
                self._fail(
                    f"is not a JSON array (starts with {found}); a .json input must be one array "
                    "of objects; for one object per line, rename the file to .jsonl"
                )
            self._pos += 1
            if self._next_char() == "]":
                self._pos += 1
            else:
                yield from self._elements()
            if self._next_char() != "":
                self._fail(
                    f"has extra data after the JSON array at line {self._line_at(self._pos)}"
                )

    def _elements(self) -> Iterator[tuple[int, Any, bool]]:
        while True:
            self._next_char()
            value, end = self._decode_value()
            start = self._pos  # read after decoding: a refill moves the buffer
            if isinstance(value, Unreadable):
                clean = True  # nothing of it is kept
            else:
                # Only invalid bytes (decoded to surrogates) or a \u escape can yield a lone
                # surrogate.
                clean = (
                    self._buf.find("\\u", start, end) < 0
                    and SURROGATE.search(self._buf, start, end) is None
                )
            yield self._line_at(start), value, clean
            self._pos = end
            sep = self._next_char()
            if sep == ",":
                self._pos += 1
            elif sep == "]":
                self._pos += 1
                return
            else:
                where = f"at line {self._line_at(self._pos)}"
                got = "end of file" if sep == "" else repr(sep)
                self._fail(f"is not valid JSON: expected ',' or ']' {where}, found {got}")

    def _decode_value(self) -> tuple[Any, int]:
        while True:
            try:
                value, end = self._decoder.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as exc:
                truncated = exc.pos >= len(self._buf) - _TRUNCATION_SLACK or exc.msg.startswith(
                    "Unterminated string"
                )
                if self._eof or not truncated:
                    self._fail(f"is not valid JSON: {exc.msg} at line {self._line_at(exc.pos)}")
                self._fill(max(_CHUNK, len(self._buf) - self._pos))  # doubling keeps retries linear
                continue
            except (RecursionError, ValueError) as exc:  # valid JSON that Python cannot build
                end = self._skip_value()
                if isinstance(exc, ValueError):
                    # The buffer now holds the whole element: "1111.5" cut at "1111" reads.
                    try:
                        return self._decoder.raw_decode(self._buf, self._pos)
                    except json.JSONDecodeError as bad:
                        self._fail(f"is not valid JSON: {bad.msg} at line {self._line_at(bad.pos)}")
                    except (RecursionError, ValueError) as again:
                        exc = again
                return Unreadable(unreadable_reason(exc)), end
            if end > len(self._buf) - _TRUNCATION_SLACK and not self._eof:
                self._fill(_CHUNK)  # a bare number may go on in the next chunk: "1" of "1.5e3"
                continue
            return value, end

    def _skip_value(self) -> int:
        """End of the value at ``self._pos`` (which the decoder began, so it starts a value),
        found by balancing brackets outside strings; refills until the buffer holds all of it.
        Raises ``InputFileError`` when the file ends first."""
        depth, offset = 0, 0  # offset from self._pos, which a refill moves
        while True:
            token = _SKIP_TOKEN.match(self._buf, self._pos + offset)
            # A token that reaches the end of the buffer may go on in the next chunk.
            if token is None or (token.end() == len(self._buf) and token.group()[0] != '"'):
                if not self._eof:
                    self._fill(max(_CHUNK, len(self._buf) - self._pos))
                    continue
                if token is None:
                    where = self._line_at(self._pos + offset)
                    self._fail(f"is not valid JSON: unterminated string at line {where}")
            text = token.group()
            if text in ("[", "{"):
                depth += 1
            elif text in ("]", "}"):
                depth -= 1
            offset = token.end() - self._pos
            if depth <= 0:
                return token.end()

    def _next_char(self) -> str:
        """Skip whitespace; return the next character ('' at end of file) without consuming it."""
        while True:
            self._pos = _WS.match(self._buf, self._pos).end()
            if self._pos < len(self._buf) or self._eof:
                return self._peek()
            self._fill(_CHUNK)

    def _peek(self) -> str:
        return self._buf[self._pos : self._pos + 1]

    def _fill(self, size: int) -> None:
        # Drop what was consumed, keeping the line count of the dropped part.
        self._line += self._buf.count("\n", self._line_pos, self._pos)
        self._buf = self._buf[self._pos :]
        self._pos = self._line_pos = 0
        chunk = self._file.read(size)
        if not self._buf and self._file.tell() == len(chunk) and chunk.startswith(BOM):
            chunk = chunk[3:]
        self._eof = not chunk
        self._buf += self._utf8.decode(chunk, final=self._eof)

    def _line_at(self, pos: int) -> int:
        if pos >= self._line_pos:
            self._line += self._buf.count("\n", self._line_pos, pos)
            self._line_pos = pos
            return self._line
        return self._line - self._buf.count("\n", pos, self._line_pos)

    def _fail(self, message: str) -> NoReturn:
        raise InputFileError(f"input file {self.path} {message}")
