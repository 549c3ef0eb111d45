"""Token ids of one file, from the score the parser already built, and their Arrow columns.

Public API: ``TokenIds``, ``score_for_tokens(data, parsed)``, ``token_group(multi_stream)``
(the ``schema.ColumnGroup`` of a run with tokens) and ``TOKEN_COLUMNS``. No miditok here: the
tokenizer itself lives in ``tokenizer``.

No second parse. The symusic backend loads every file once as a ``symusic.Score`` (tick time)
for its features; the same object is tokenized. It was loaded from the bytes with each track's
end-of-track rewritten as a one-byte marker (``grammar.with_end_markers``), and a Score's end
tick counts markers, which MuMIDI and the time-signature bookkeeping of every tokenizer read:
those markers (text ``"\\x00"``) are removed first, so the tokenizer sees the Score that
``symusic.Score.from_file(path)`` gives. Two cases build a Score from the same bytes instead,
once: a file the mido backend parsed (``--midi_backend mido``, or a file symusic cannot time
like mido: type 2, SMPTE, ticks past int32), and a file whose own bytes hold such a marker
(``FF 06 01 00``), which could not be told from ours.

Layout of a row (``tokens`` is always ``list<int32>``):
- one stream, one vocabulary (e.g. REMI or TSD with ``use_programs``, the text2midi preset):
  the ids as miditok gives them, wrapped in BOS ... EOS when asked;
- one sequence per track (``one_token_stream`` false, e.g. miditok's default REMI): the tracks'
  sequences concatenated in miditok's order, and ``token_track_lengths`` (list<int32>) holds
  each one's stored length, so ``np.split(tokens, np.cumsum(lengths)[:-1])`` is miditok's list;
- several vocabularies (CPWord, Octuple, MuMIDI): each token's ids row-major, so
  ``np.reshape(tokens, (-1, k))`` with ``k = len(vocab.json)`` is miditok's ``ids`` (MuMIDI
  gives some tokens fewer than ``k`` ids: their rows end in -1 padding).
``n_tokens_midi`` counts tokens (rows of ``k`` ids) before the cut, BOS/EOS included;
``tokens_truncated`` is ``n_tokens_midi > --max_midi_tokens``, and then only the first
``--max_midi_tokens`` tokens are kept (so a cut sequence has no EOS, as in text2midi's loader).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import symusic

from amtprep.midi.grammar import END_MARKER
from amtprep.midi.notes import ParsedMidi
from amtprep.midi.schema import ColumnGroup, list_column

_MARKER_TEXT = "\x00"  # the text of the markers ``grammar.with_end_markers`` writes


@dataclass
class TokenIds:
    ids: np.ndarray  # int32, flat (see the module docstring for the layout)
    n_tokens: int  # tokens before the cut, BOS/EOS included
    truncated: bool
    track_lengths: np.ndarray | None = None  # int32 per stream, multi-stream tokenizers only


def score_for_tokens(data: bytes, parsed: ParsedMidi) -> symusic.Score:
    """The Score ``symusic.Score.from_file`` would give for ``data``, reusing the parser's.
    Raises what symusic raises for a file it cannot read."""
    score = parsed.score
    if score is None or (parsed.score_end_markers and END_MARKER in data):
        return symusic.Score.from_midi(data, ttype="tick")
    if parsed.score_end_markers:
        score.markers.filter(_not_end_marker, inplace=True)
    return score


def _not_end_marker(marker) -> bool:
    return marker.text != _MARKER_TEXT


def _token_arrays(results: Sequence, tracks: bool) -> list[pa.Array]:
    tokens = [r.tokens for r in results]
    mask = np.array([t is None for t in tokens], dtype=bool)
    arrays = [
        list_column([None if t is None else t.ids for t in tokens], pa.int32(), mask),
        pa.array([None if t is None else t.n_tokens for t in tokens], pa.int32()),
        pa.array([None if t is None else t.truncated for t in tokens], pa.bool_()),
    ]
    if tracks:
        lengths = [None if t is None else t.track_lengths for t in tokens]
        arrays.append(list_column(lengths, pa.int32(), mask))
    return arrays


TOKEN_COLUMNS = ("tokens", "n_tokens_midi", "tokens_truncated", "token_track_lengths")


def token_group(multi_stream: bool) -> ColumnGroup:
    fields = [
        pa.field("tokens", pa.list_(pa.int32())),
        pa.field("n_tokens_midi", pa.int32()),
        pa.field("tokens_truncated", pa.bool_()),
    ]
    if multi_stream:
        fields.append(pa.field("token_track_lengths", pa.list_(pa.int32())))
    return ColumnGroup(
        "tokens", tuple(fields), functools.partial(_token_arrays, tracks=multi_stream)
    )
