"""REMI ids without miditok's per-event Python objects: the same ids, 5-7x faster.

Public API: ``FastREMI.for_tokenizer(tok)`` (``None`` where it does not apply) and
``FastREMI.encode(score) -> list[np.ndarray]`` (one int32 array per token sequence, as
``tok(score)`` gives them: one, or one per track).

Why: in a worker, miditok's ``encode`` is ~85% of the MIDI stage's time with tokens, and almost
all of that is building an ``Event`` object per token, sorting them, turning each into a string
and each string into an id. The score preprocessing (resampling, quantising velocities,
durations and tempos, merging tracks, removing duplicates) is a few percent of it and runs in
symusic's C++. So this module calls miditok's own ``preprocess_score`` unchanged and replaces
only what follows: the events as id arrays (numpy), one stable sort by time, and REMI's
time-event state machine with the same Bar, TimeSig and Position rules, done as arrays between
two TimeSig events (one by one only at those).

Where it applies: an untrained ``miditok.REMI`` (the class itself, not a subclass) of miditok
3.0.3 (the version the code below was read from and is tested against, text2midi's pin), with
no chords, rests, pitch bends, pedals, pitch intervals, program changes, bar numbers or bar-end
tokens: the text2midi preset and miditok's default REMI, with or without programs, time
signatures, tempos and drum tokens. Anything else runs through miditok. If a file needs a token
the vocabulary lacks, or a case this code does not follow, ``_Unsupported`` is raised and the
caller finishes the file with miditok's own ``_score_to_tokens`` on the same preprocessed score,
so errors and ids stay miditok's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from amtprep import versions

_MIDITOK_VERSION = "3.0.3"


class _Unsupported(Exception):
    """This score needs miditok's own event code (the caller falls back to it)."""


def _table(vocab: dict[str, int], prefix: str, values) -> np.ndarray:
    """id of ``f"{prefix}_{v}"`` for each v in ``values`` (-1 where the vocabulary lacks it)."""
    return np.array([vocab.get(f"{prefix}_{v}", -1) for v in values], np.int64)


def _lookup(table: np.ndarray, index: np.ndarray, offset: int = 0) -> np.ndarray:
    index = index.astype(np.int64) + offset
    if index.size and (index.min() < 0 or index.max() >= table.size):
        raise _Unsupported
    ids = table[index]
    if ids.size and ids.min() < 0:
        raise _Unsupported
    return ids


@dataclass
class _Durations:
    """Duration token ids for one ticks-per-beat value, keyed by duration in ticks."""

    ticks: np.ndarray  # sorted
    ids: np.ndarray

    def lookup(self, durations: np.ndarray) -> np.ndarray:
        at = np.searchsorted(self.ticks, durations)
        if durations.size and (
            at.max() >= self.ticks.size or not np.array_equal(self.ticks[at], durations)
        ):
            raise _Unsupported
        return self.ids[at]


@dataclass
class _TimeState:
    """REMI's running time state (the names of remi.py's locals)."""

    tpbar: int
    tppos: int
    ts_id: int = -1
    current_bar: int = -1
    bar_at_ts: int = 0
    tick_at_ts: int = 0
    tick_at_bar: int = 0
    previous: int = -1


class FastREMI:
    """A ``miditok.REMI``'s encoding, vectorised; built from the tokenizer, pickles with it."""

    def __init__(self, tok) -> None:
        cfg = tok.config
        vocab = tok.vocab
        self.tok = tok
        self.use_programs = bool(cfg.use_programs)
        self.one_stream = bool(tok.one_token_stream)
        self.use_ts = bool(cfg.use_time_signatures)
        self.use_tempos = bool(cfg.use_tempos)
        self.drum_tokens = bool(cfg.use_pitchdrum_tokens)
        self.pos_per_beat = int(cfg.max_num_pos_per_beat)
        self.pitch = _table(vocab, "Pitch", range(128))
        self.pitch_drum = _table(vocab, "PitchDrum", range(128))
        self.velocity = _table(vocab, "Velocity", range(128))
        self.program = _table(vocab, "Program", range(-1, 128))  # index program + 1
        self.position = _table(vocab, "Position", range(4096))
        self.bar = vocab["Bar_None"]
        self.vocab = vocab
        self.durations = {
            int(tpb): _Durations(
                np.array(sorted(ticks_map), np.int64),
                np.array([vocab.get(f"Duration_{ticks_map[t]}", -1) for t in sorted(ticks_map)]),
            )
            for tpb, ticks_map in tok._tpb_ticks_to_tokens.items()
        }

    @classmethod
    def for_tokenizer(cls, tok) -> FastREMI | None:
        """A fast encoder equal to ``tok``'s, or ``None`` where this module does not apply."""
        try:
            import miditok
        except ImportError:
            return None
        if versions.miditok_version() != _MIDITOK_VERSION or type(tok) is not miditok.REMI:
            return None
        cfg = tok.config
        params = cfg.additional_params
        if (
            tok.is_trained
            or cfg.use_chords
            or cfg.use_rests
            or cfg.use_pitch_bends
            or cfg.use_sustain_pedals
            or cfg.use_pitch_intervals
            or cfg.program_changes
            or params.get("max_bar_embedding") is not None
            or params.get("use_bar_end_tokens")
            or tok._note_on_off
            or "Bar_None" not in tok.vocab
        ):
            return None
        return cls(tok)

    def encode(self, score) -> list[np.ndarray]:
        """``[seq.ids for seq in tok(score)]`` (a one-item list for one stream); mutates
        ``score`` as miditok does. Raises what miditok raises."""
        pre = self.tok.preprocess_score(score)
        try:
            return self._encode_preprocessed(pre)
        except _Unsupported:
            out = self.tok._score_to_tokens(pre)
            seqs = out if isinstance(out, list) else [out]
            return [np.asarray(seq.ids, np.int32) for seq in seqs]

    # -- events --------------------------------------------------------------------------

    def _global_events(self, score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Times, ids and time-signature (numerator, denominator) of the TimeSig then Tempo
        events, in ``_create_global_events``'s order (den 0 marks a tempo)."""
        times, ids, sigs = [], [], []
        if self.use_ts:
            for ts in score.time_signatures:
                times.append(ts.time)
                ids.append(self._ts_id(ts.numerator, ts.denominator))
                sigs.append((ts.numerator, ts.denominator))
        if self.use_tempos:
            for tempo in score.tempos:
                times.append(tempo.time)
                ids.append(self._id(f"Tempo_{round(tempo.tempo, 2)}"))
                sigs.append((0, 0))
        return (
            np.array(times, np.int64),
            np.array(ids, np.int64),
            np.array(sigs, np.int64).reshape(-1, 2),
        )

    def _id(self, token: str) -> int:
        found = self.vocab.get(token)
        if found is None:
            raise _Unsupported
        return found

    def _track_events(self, track, ticks_per_beat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Times and ids of one track's note events: [Program,] Pitch, Velocity, Duration per
        note, in note order (``_create_track_events``)."""
        notes = track.notes.numpy()
        time = notes["time"].astype(np.int64)
        if time.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        is_drum = bool(track.is_drum)
        pitch_table = self.pitch_drum if (self.drum_tokens and is_drum) else self.pitch
        columns = []
        if self.use_programs:
            program = -1 if is_drum else int(track.program)
            columns.append(np.full(time.size, _lookup(self.program, np.array([program]), 1)[0]))
        columns.append(_lookup(pitch_table, notes["pitch"]))
        columns.append(_lookup(self.velocity, notes["velocity"]))
        # miditok walks the ticks-per-beat sections with a cursor that only moves forward
        section = np.maximum.accumulate(np.searchsorted(ticks_per_beat[:, 0], time, side="right"))
        if section.max() >= len(ticks_per_beat):
            raise _Unsupported  # miditok's cursor runs off its array: let it raise
        tpb = ticks_per_beat[section, 1]
        duration = notes["duration"].astype(np.int64)
        dur_ids = np.empty(time.size, np.int64)
        for value in np.unique(tpb):
            table = self.durations.get(int(value))
            if table is None:
                raise _Unsupported
            mask = tpb == value
            dur_ids[mask] = table.lookup(duration[mask])
        columns.append(dur_ids)
        ids = np.stack(columns, axis=1).ravel()
        return np.repeat(time, len(columns)), ids

    def _encode_preprocessed(self, score) -> list[np.ndarray]:
        from miditok.utils import get_score_ticks_per_beat

        if self.use_ts:
            ticks_per_beat = get_score_ticks_per_beat(score)
        else:
            ticks_per_beat = np.array([[score.end(), self.tok.time_division]])
        ticks_per_beat = np.asarray(ticks_per_beat, np.int64).reshape(-1, 2)
        g_time, g_ids, g_sigs = self._global_events(score)
        tracks = [self._track_events(track, ticks_per_beat) for track in score.tracks]
        tpq = int(score.ticks_per_quarter)
        if self.one_stream:
            streams = [[(g_time, g_ids, g_sigs), *((t, i, None) for t, i in tracks)]]
        else:
            streams = [[(g_time, g_ids, g_sigs), (t, i, None)] for t, i in tracks] or [
                [(g_time, g_ids, g_sigs)]
            ]
        return [self._stream(parts, tpq) for parts in streams]

    def _stream(self, parts, tpq: int) -> np.ndarray:
        times = np.concatenate([p[0] for p in parts])
        ids = np.concatenate([p[1] for p in parts])
        sigs = np.concatenate(
            [p[2] if p[2] is not None else np.zeros((p[0].size, 2), np.int64) for p in parts]
        )
        order = np.argsort(times, kind="stable")  # miditok: list.sort(key=time), stable
        return self._add_time_events(times[order], ids[order], sigs[order], tpq)

    # -- REMI's time events (remi.py ``_add_time_events``) -------------------------------

    def _add_time_events(
        self, times: np.ndarray, ids: np.ndarray, sigs: np.ndarray, tpq: int
    ) -> np.ndarray:
        """miditok's state machine, with the groups between two TimeSig events (whose bar
        length and position size are fixed) done as arrays; only TimeSig events one by one."""
        n = times.size
        if n == 0:
            return np.zeros(0, np.int32)
        is_ts = sigs[:, 1] > 0
        # a group starts where the time changes, at a TimeSig and right after one
        start = np.ones(n, bool)
        start[1:] = (times[1:] != times[:-1]) | is_ts[1:] | is_ts[:-1]
        heads = np.flatnonzero(start)
        sizes = np.diff(np.append(heads, n))
        num, den = 4, 4
        if is_ts.any():  # miditok starts from the first TimeSig event, wherever it is
            first = int(np.argmax(is_ts))
            num, den = int(sigs[first, 0]), int(sigs[first, 1])
        st = _TimeState(*self._bar_and_pos(num, den, tpq))
        st.ts_id = self._ts_id(num, den) if self.use_ts else -1
        pieces: list[np.ndarray] = []
        ts_heads = np.flatnonzero(is_ts[heads])
        lo = 0
        for k in [*ts_heads.tolist(), len(heads)]:
            if k > lo:  # groups lo..k-1: no TimeSig among them
                h = heads[lo:k]
                pieces.append(
                    self._run(st, times[h], sizes[lo:k], ids[h[0] : h[-1] + sizes[k - 1]])
                )
            if k == len(heads):
                break
            head = int(heads[k])
            pieces.append(self._time_signature(st, head, times, sigs, ids, tpq))
            lo = k + 1
        return np.concatenate(pieces).astype(np.int32)

    def _run(self, st: _TimeState, t: np.ndarray, sizes: np.ndarray, ids: np.ndarray):
        """Bar [TimeSig] ... Position before each group of a stretch without TimeSig events;
        every group starts at a new time (or right after a TimeSig: miditok forces a
        Position there)."""
        bar = st.bar_at_ts + (t - st.tick_at_ts) // st.tpbar  # non-decreasing
        reached = np.maximum(np.maximum.accumulate(bar), st.current_bar)
        before = np.concatenate(([st.current_bar], reached[:-1]))
        new_bars = np.maximum(bar - before, 0)
        tick_at_bar = np.where(
            reached > st.current_bar,
            st.tick_at_ts + (reached - st.bar_at_ts) * st.tpbar,
            st.tick_at_bar,
        )
        # the position is taken from the last bar start written, which the formula above
        # gives once a bar has started in this stretch
        pos_ids = _lookup(self.position, (t - tick_at_bar) // st.tppos)
        per_bar = 2 if self.use_ts else 1
        prefix = new_bars * per_bar + 1
        total = int(prefix.sum()) + ids.size
        out = np.empty(total, np.int64)
        # event slots: each event moves right by the prefixes of its group and those before
        shift = np.repeat(np.cumsum(prefix), sizes)
        event_slots = np.arange(ids.size) + shift
        is_prefix = np.ones(total, bool)
        is_prefix[event_slots] = False
        stream = np.empty(int(prefix.sum()), np.int64)
        pos_slots = np.cumsum(prefix) - 1
        filler = np.ones(stream.size, bool)
        filler[pos_slots] = False
        pattern = np.array([self.bar, st.ts_id] if self.use_ts else [self.bar], np.int64)
        stream[filler] = np.tile(pattern, int(new_bars.sum()))
        stream[pos_slots] = pos_ids
        out[is_prefix] = stream
        out[event_slots] = ids
        st.current_bar = int(reached[-1])
        st.tick_at_bar = int(tick_at_bar[-1])
        st.previous = int(t[-1])
        return out

    def _time_signature(self, st: _TimeState, head: int, times, sigs, ids, tpq: int):
        """One TimeSig event: bars up to it (the last without its own TimeSig token), no
        Position, then the new bar length from its time."""
        t = int(times[head])
        out: list[int] = []
        if t != st.previous:
            new_bars = st.bar_at_ts + (t - st.tick_at_ts) // st.tpbar - st.current_bar
            for i in range(new_bars):
                st.current_bar += 1
                st.tick_at_bar = st.tick_at_ts + (st.current_bar - st.bar_at_ts) * st.tpbar
                out.append(self.bar)
                if i + 1 != new_bars:
                    out.append(st.ts_id)
            st.previous = t
        num, den = int(sigs[head, 0]), int(sigs[head, 1])
        st.bar_at_ts += (t - st.tick_at_ts) // st.tpbar
        st.tick_at_ts = t
        st.tpbar, st.tppos = self._bar_and_pos(num, den, tpq)
        st.ts_id = self._ts_id(num, den)
        st.previous -= 1
        out.append(int(ids[head]))
        return np.array(out, np.int64)

    def _bar_and_pos(self, num: int, den: int, tpq: int) -> tuple[int, int]:
        """Ticks per bar and per position, as remi.py computes them."""
        from miditok.utils import compute_ticks_per_beat

        tpb = compute_ticks_per_beat(den, tpq)
        tppos = tpb // self.pos_per_beat
        if tppos <= 0:
            raise _Unsupported  # miditok divides by it: let it raise
        return int(tpb * num), tppos  # compute_ticks_per_bar

    def _ts_id(self, num: int, den: int) -> int:
        return self._id(f"TimeSig_{num}/{den}")
