"""The track event grammar as one compiled regex: the fast backend's check that a file is plain.

Public API: ``plain_tracks(data, header) -> bool`` and ``with_end_markers(data, header) -> bytes``.

``container.track_end_ticks`` walks events in Python (~1 ms for a 14 KB file) for two reasons:
to find each track's end tick (symusic drops end-of-track events, mido's ``length`` counts them)
and to route files that symusic would read differently from mido to the mido backend. This module
does both at C speed:

- ``plain_tracks`` is true when every track fully matches the grammar below, which accepts
  exactly the byte streams the scan accepts without raising, minus rarities that are left to
  the scan (a meta or sysex event over 127 bytes, an end-of-track that is missing or not last),
  and when no track can count ticks past int32 (symusic stores ticks as int32). Running status
  is a three-state machine (after a two-data-byte status, after a one-data-byte status, or
  none: start of track or after sysex); meta events keep the state, as in mido. Every
  alternative starts with a distinct byte, so the match is unique and possessive quantifiers
  (Python 3.11) never give anything back: matching is linear.
- ``with_end_markers`` rewrites each track's final ``FF 2F 00`` as a one-byte marker
  ``FF 06 01 00`` (chunk length + 1). symusic keeps markers with their ticks, so the latest
  marker tick is the file's end tick: every other event lies at or before its track's end.
"""

from __future__ import annotations

import re
import struct

import numpy as np

from amtprep.midi.container import MidiHeader

INT32_MAX = 2**31 - 1  # symusic stores ticks as int32
_END_OF_TRACK = b"\xff\x2f\x00"
_END_MARKER = b"\xff\x06\x01\x00"
END_MARKER = _END_MARKER  # public: ``tokens`` tells a file's own such markers from ours

_LO, _HI = rb"[\x00-\x7f]", rb"[\x80-\xff]"


def _any(parts: list[bytes]) -> bytes:
    return b"(?:" + b"|".join(parts) + b")"


def _sized(body) -> bytes:
    """A one-byte length k (0..127), then the k-byte ``body(k)``."""
    return _any([re.escape(bytes([k])) + body(k) for k in range(128)])


def _sysex_body(k: int) -> bytes:
    # The scan's rule: after dropping one leading F0 and one trailing F7, all bytes < 0x80.
    if k == 0:
        return b""
    if k == 1:
        return rb"[\x00-\x7f\xf0\xf7]"
    lo = _LO + b"{%d}"
    return _any(
        [
            rb"\xf0" + lo % (k - 2) + rb"\xf7",
            rb"\xf0" + lo % (k - 1),
            lo % (k - 1) + rb"\xf7",
            lo % k,
        ]
    )


_DELTA = _HI + rb"{0,3}+" + _LO  # at most 4 bytes, the SMF limit the scan enforces
_META = rb"\xff[^\x2f]" + _sized(lambda k: rb".{%d}" % k)  # any meta but end-of-track
_SYSEX = rb"[\xf0\xf7]" + _sized(_sysex_body)
_STATUS_2 = rb"[\x80-\xbf\xe0-\xef]" + _LO + b"{2}"  # note off/on, aftertouch, control, bend
_STATUS_1 = rb"[\xc0-\xdf]" + _LO  # program change, channel pressure


def _running(status: bytes, data: bytes) -> bytes:
    """A status event, then events that keep its running status (one-byte deltas first)."""
    common = _LO + _any([status, data])
    general = _DELTA + _any([status, data, _META])
    return _DELTA + status + _any([common, general]) + b"*+"


_TRACK = re.compile(
    _any([_DELTA + _META])
    + b"*+"
    + _any(
        [
            _running(_STATUS_2, _LO + b"{2}"),
            _running(_STATUS_1, _LO),
            _DELTA + _SYSEX + _any([_DELTA + _META]) + b"*+",
        ]
    )
    + b"*+"
    + _DELTA
    + re.escape(_END_OF_TRACK),
    re.DOTALL,
)


def _tick_bound(data: bytes) -> int:
    """An upper bound on any track's tick count, from byte classes alone.

    A delta is k bytes >= 0x80 then one < 0x80, worth < 128**(k+1); its high bytes lie in a
    maximal run of high bytes that ends at its own last byte, so runs and deltas pair up one to
    one, and one-byte deltas are at most one per low byte. Runs of >= 1, 2 and 3 high bytes are
    counted by their starts.
    """
    high = np.frombuffer(b"\x00" + data + b"\x00\x00", np.uint8) >= 0x80
    starts = high[1:-2] & ~high[:-3]
    longer = starts & high[2:-1]
    runs, runs_2, runs_3 = (int(np.count_nonzero(m)) for m in (starts, longer, longer & high[3:]))
    low = len(data) - int(np.count_nonzero(high))
    return 127 * low + 128**2 * runs + (128**3 - 128**2) * runs_2 + (128**4 - 128**3) * runs_3


def plain_tracks(data: bytes, header: MidiHeader) -> bool:
    match = _TRACK.fullmatch
    return all(match(data, start, end) for start, end in header.track_offsets) and (
        _tick_bound(data) <= INT32_MAX
    )


def with_end_markers(data: bytes, header: MidiHeader) -> bytes:
    """Only for files where ``plain_tracks`` holds: each track then ends with ``FF 2F 00``."""
    first = header.track_offsets[0][0] - 8 if header.track_offsets else len(data)
    parts = [data[:first]]
    for start, end in header.track_offsets:
        parts += [b"MTrk", struct.pack(">I", end - start + 1), data[start : end - 3], _END_MARKER]
    return b"".join(parts)
