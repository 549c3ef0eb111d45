"""The vectorised REMI encoder gives miditok's own ids, file by file, or hands back to miditok."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

miditok = pytest.importorskip("miditok")
import symusic  # noqa: E402

from amtprep import versions  # noqa: E402
from amtprep.config import TokenConfig  # noqa: E402
from amtprep.midi import fast_remi  # noqa: E402
from amtprep.midi.fast_remi import FastREMI  # noqa: E402
from amtprep.midi.tokenizer import ENCODER_ENV, TEXT2MIDI, MidiTokenizer  # noqa: E402
from tests.midi.conftest import meta, midi_bytes, note  # noqa: E402
from tests.midi.midigen import TPB_CHOICES, generate_midi  # noqa: E402

pytestmark = pytest.mark.skipif(
    versions.miditok_version() != "3.0.3", reason="the fast REMI encoder follows miditok 3.0.3"
)

CONFIGS = {
    "default": {},
    "text2midi": TEXT2MIDI,
    "signatures_tempos": {"use_time_signatures": True, "use_tempos": True},
    "programs_no_drum_tokens": {
        "use_programs": True,
        "use_pitchdrum_tokens": False,
        "use_time_signatures": True,
    },
    "coarse_programs_per_track": {
        "beat_res": {(0, 4): 4},
        "use_time_signatures": True,
        "use_tempos": True,
        "use_programs": True,
        "one_token_stream_for_programs": False,
    },
    "dedup_deletes": {
        "use_programs": True,
        "use_tempos": True,
        "use_time_signatures": True,
        "delete_equal_successive_time_sig_changes": True,
        "delete_equal_successive_tempo_changes": True,
    },
}


def _bar(n: int = 4, tpb: int = 480) -> int:
    return n * tpb


def mido_program(program: int, channel: int = 0):
    import mido

    return mido.Message("program_change", program=program, channel=channel)


# Hand-built files for the time rules
EDGE_FILES = {
    # 3/4 -> 6/8 -> 4/4 at bar lines: three denominators, time resampled per section
    "signature_changes": midi_bytes(
        [
            meta("time_signature", numerator=3, denominator=4),
            meta("time_signature", _bar(3), numerator=6, denominator=8),
            meta("time_signature", _bar(6), numerator=4, denominator=4),
        ],
        [note(60), note(60, 0, 240), note(62, 80, 1200), note(62, 0, 700), note(64, 90, 2000)]
        + [note(64, 0, 480)],
    ),
    # a change in the middle of a bar, and one miditok does not support (7/16): filtered
    "signature_mid_bar_and_unsupported": midi_bytes(
        [
            meta("time_signature", numerator=4, denominator=4),
            meta("time_signature", 720, numerator=3, denominator=4),
            meta("time_signature", 1440, numerator=7, denominator=16),
        ],
        [note(67), note(67, 0, 300), note(69, 70, 500), note(69, 0, 900), note(71, 60, 100)]
        + [note(71, 0, 3000)],
    ),
    # two time signatures at tick 0 (the last one written counts), then 97 beats of silence:
    # 20 bars of 5/4
    "two_signatures_at_zero_and_silence": midi_bytes(
        [
            meta("time_signature", numerator=2, denominator=4),
            meta("time_signature", numerator=5, denominator=4),
        ],
        [note(48), note(48, 0, 100), note(50, 50, 480 * 97), note(50, 0, 480 * 9)],
    ),
    # tempo changes, two at one tick (the last kept), no notes in the first bars
    "tempos": midi_bytes(
        [
            meta("set_tempo", tempo=500_000),
            meta("set_tempo", 960, tempo=400_000),
            meta("set_tempo", 0, tempo=300_000),
            meta("set_tempo", 4000, tempo=1_000_000),
        ],
        [note(72, 100, 3000), note(72, 0, 10), note(73, 100, 1), note(73, 0, 1)],
    ),
    # drums on channel 10 with program 115, notes outside the pitch range, chords
    "drums_and_range": midi_bytes(
        [
            mido_program(115, channel=9),
            note(36, 100, 0, 9),
            note(38, 100, 0, 9),
            note(36, 0, 120, 9),
            note(38, 0, 0, 9),
            note(20, 90, 0, 9),
            note(20, 0, 60, 9),
        ],
        [note(10), note(10, 0, 100), note(120), note(60), note(64), note(67)]
        + [note(60, 0, 480), note(64, 0, 0), note(67, 0, 0), note(120, 0, 0)],
    ),
    "no_notes": midi_bytes([meta("set_tempo", tempo=500_000)]),
    "one_long_note": midi_bytes([note(60), note(60, 0, 480 * 64)]),
}


def corpus() -> dict[str, bytes]:
    files = {f"gen{s}": generate_midi(s) for s in range(120)}
    for i, tpb in enumerate(TPB_CHOICES):  # 1 and 32767 ticks per beat included
        files[f"type0_tpb{tpb}"] = generate_midi(1000 + i, midi_type=0, tpb=tpb)
    music21 = Path(os.path.dirname(__import__("music21").__file__)) / "midi" / "testPrimitive"
    files.update({p.name: p.read_bytes() for p in sorted(music21.glob("*.mid"))})
    files.update({f"sample/{p.name}": p.read_bytes() for p in _sample_files()})
    files.update(EDGE_FILES)
    return files


def _sample_files() -> list[Path]:
    return sorted((Path(__file__).resolve().parents[2] / "data" / "sample" / "midi").glob("*.mid"))


def miditok_ids(tok, score) -> list[np.ndarray] | str:
    try:
        out = tok(score)
    except Exception as exc:  # the fast path must raise the same
        return type(exc).__name__
    seqs = out if isinstance(out, list) else [out]
    return [np.asarray(s.ids, np.int32) for s in seqs]


def fast_ids(fast: FastREMI, score) -> list[np.ndarray] | str:
    try:
        return fast.encode(score)
    except Exception as exc:
        return type(exc).__name__


def same(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_ids_equal_miditok_file_by_file(config):
    tok = miditok.REMI(miditok.TokenizerConfig(**CONFIGS[config]))
    fast = FastREMI.for_tokenizer(tok)
    assert fast is not None
    checked = 0
    for name, data in corpus().items():
        try:
            score = symusic.Score.from_midi(data)
        except Exception:
            continue  # symusic cannot read it: amtprep fails the row before tokenizing
        expected = miditok_ids(tok, score.copy())
        assert same(fast_ids(fast, score.copy()), expected), (config, name)
        checked += 1
    assert checked > 150


def test_edge_files_exercise_the_time_rules():
    """The hand-built files really reach the rules they are named after."""
    tok = miditok.REMI(miditok.TokenizerConfig(**TEXT2MIDI))
    fast = FastREMI.for_tokenizer(tok)
    inverse = {v: k for k, v in tok.vocab.items()}
    for name in ("signature_changes", "signature_mid_bar_and_unsupported"):
        score = symusic.Score.from_midi(EDGE_FILES[name])
        tokens = [inverse[i] for i in fast.encode(score)[0]]
        signatures = {t for t in tokens if t.startswith("TimeSig_")}
        assert len(signatures) >= 2, (name, signatures)
        assert "TimeSig_7/16" not in signatures
    score = symusic.Score.from_midi(EDGE_FILES["two_signatures_at_zero_and_silence"])
    tokens = [inverse[i] for i in fast.encode(score)[0]]
    assert tokens.count("Bar_None") == 20 and tokens[1] == "TimeSig_5/4"
    score = symusic.Score.from_midi(EDGE_FILES["tempos"])
    tempos = [inverse[i] for i in fast.encode(score)[0] if inverse[i].startswith("Tempo_")]
    assert len(tempos) >= 2


def test_a_case_it_does_not_follow_is_finished_by_miditok(monkeypatch):
    tok = miditok.REMI(miditok.TokenizerConfig(**TEXT2MIDI))
    fast = FastREMI.for_tokenizer(tok)
    calls = []

    def unsupported(score):
        calls.append(score)
        raise fast_remi._Unsupported

    monkeypatch.setattr(fast, "_encode_preprocessed", unsupported)
    for seed in range(5):
        score = symusic.Score.from_midi(generate_midi(seed))
        assert same(fast.encode(score.copy()), miditok_ids(tok, score.copy()))
    assert len(calls) == 5


def test_a_token_missing_from_the_vocabulary_raises_miditoks_error():
    # miditok's vocabularies hold every position a supported bar has, so take away the one
    # this file needs: a note on beat 3 at 8 positions per beat
    tok = miditok.REMI(miditok.TokenizerConfig(use_time_signatures=True))
    del tok.vocab["Position_24"]
    fast = FastREMI.for_tokenizer(tok)
    score = symusic.Score.from_midi(midi_bytes([note(60, 80, 480 * 3), note(60, 0, 100)]))
    assert miditok_ids(tok, score.copy()) == "KeyError"
    assert fast_ids(fast, score.copy()) == "KeyError"


@pytest.mark.parametrize(
    "build",
    [
        lambda: miditok.TSD(miditok.TokenizerConfig()),
        lambda: miditok.REMI(miditok.TokenizerConfig(use_chords=True)),
        lambda: miditok.REMI(miditok.TokenizerConfig(use_rests=True)),
        lambda: miditok.REMI(miditok.TokenizerConfig(use_sustain_pedals=True)),
        lambda: miditok.REMI(miditok.TokenizerConfig(use_pitch_bends=True)),
        lambda: miditok.REMI(miditok.TokenizerConfig(use_programs=True, program_changes=True)),
        lambda: miditok.REMI(miditok.TokenizerConfig(), max_bar_embedding=16),
        lambda: miditok.REMI(miditok.TokenizerConfig(use_bar_end_tokens=True)),
    ],
)
def test_settings_it_does_not_cover_go_through_miditok(build):
    assert FastREMI.for_tokenizer(build()) is None


def test_another_miditok_version_goes_through_miditok(monkeypatch):
    tok = miditok.REMI(miditok.TokenizerConfig())
    monkeypatch.setattr(versions, "miditok_version", lambda: "3.1.0")
    assert FastREMI.for_tokenizer(tok) is None


def test_the_run_tokenizer_uses_it_unless_told_not_to(monkeypatch):
    built = MidiTokenizer.build(TokenConfig(preset="text2midi"))
    assert built.fast is not None
    score = symusic.Score.from_midi(generate_midi(3))
    fast_row = built.encode(score.copy())
    again = pickle.loads(pickle.dumps(built))  # as the workers get it
    assert np.array_equal(again.encode(score.copy()).ids, fast_row.ids)
    monkeypatch.setenv(ENCODER_ENV, "miditok")
    plain = MidiTokenizer.build(TokenConfig(preset="text2midi"))
    assert plain.fast is None
    plain_row = plain.encode(score.copy())
    assert np.array_equal(plain_row.ids, fast_row.ids)
    assert plain_row.n_tokens == fast_row.n_tokens and plain.fingerprint() == built.fingerprint()
