"""MIDI stage: parse MIDI files into features and a note sequence (no torch here, ever).

Public API: ``MidiStage`` (the stage), ``FEATURE_VERSION``, ``MIDI_SCHEMA``, ``BACKENDS``,
``extract_bytes(data, backend) -> (parser, MidiFeatures)`` for one file's bytes.

Layers: ``container`` (raw SMF chunks) -> ``parse_mido`` / ``parse_symusic`` -> ``ParsedMidi``
(``notes``: pairing rule) -> ``features`` (pure, with ``tempo``, ``key`` and
``tag_features``, the raw values of MidiCaps' tags) -> ``extract``
(one file) -> ``pool`` (worker processes) -> ``schema`` (Arrow) -> ``stage``; ``cache`` beside.
With tokens, ``tokenizer`` (miditok, built once) and ``tokens`` (ids of the Score the parser
built, and their columns) join ``extract``.
"""

from amtprep.midi.extract import BACKENDS, extract_bytes
from amtprep.midi.features import MidiFeatures
from amtprep.midi.schema import MIDI_SCHEMA
from amtprep.midi.stage import MidiStage
from amtprep.midi.version import FEATURE_VERSION

__all__ = [
    "BACKENDS",
    "FEATURE_VERSION",
    "MIDI_SCHEMA",
    "MidiFeatures",
    "MidiStage",
    "extract_bytes",
]
