"""Key names and Krumhansl–Schmuckler key estimation.

Public API:
- ``key_name(sharps_flats, minor)``: the name of a key-signature meta event, e.g. ``"Bb major"``,
  spelled as mido spells it (``(-2, 0)`` -> mido ``"Bb"`` -> ``"Bb major"``).
- ``mido_key_name(key)``: mido's ``KeySignature.key`` string (``"F#m"``) to the same form.
- ``estimate_key(profile)``: best of the 24 Krumhansl–Kessler key profiles by Pearson
  correlation with a 12-bin pitch-class profile; returns (``"A minor"``, correlation) or
  (None, None) for an empty or flat profile. Ties go to the lowest tonic, major first.
"""

from __future__ import annotations

import math

import numpy as np

PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_MAJOR_BY_SF = ("Cb", "Gb", "Db", "Ab", "Eb", "Bb", "F", "C", "G", "D", "A", "E", "B", "F#", "C#")
_MINOR_BY_SF = ("Ab", "Eb", "Bb", "F", "C", "G", "D", "A", "E", "B", "F#", "C#", "G#", "D#", "A#")

# Krumhansl & Kessler (1982) probe-tone ratings, tonic first.
_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def _centered_profiles() -> tuple[np.ndarray, list[str]]:
    rows, names = [], []
    for mode, base in (("major", _MAJOR), ("minor", _MINOR)):
        for tonic in range(12):
            rows.append(np.roll(base, tonic))
            names.append(f"{PITCH_NAMES[tonic]} {mode}")
    profiles = np.array(rows)
    profiles -= profiles.mean(axis=1, keepdims=True)
    profiles /= np.linalg.norm(profiles, axis=1, keepdims=True)
    # Interleave so index order is C major, C minor, C# major, ... (ties -> lowest tonic, major).
    order = np.array([i + 12 * m for i in range(12) for m in range(2)])
    return profiles[order], [names[i] for i in order]


_PROFILES, _PROFILE_NAMES = _centered_profiles()


def key_name(sharps_flats: int, minor: int) -> str | None:
    """None for values outside the MIDI range (-7..7, 0/1)."""
    if not -7 <= sharps_flats <= 7 or minor not in (0, 1):
        return None
    table = _MINOR_BY_SF if minor else _MAJOR_BY_SF
    return f"{table[sharps_flats + 7]} {'minor' if minor else 'major'}"


def mido_key_name(key: str) -> str:
    return f"{key[:-1]} minor" if key.endswith("m") else f"{key} major"


def estimate_key(profile: np.ndarray) -> tuple[str | None, float | None]:
    profile = np.asarray(profile, dtype=np.float64)
    # What mean() and linalg.norm() compute, without their Python-level wrappers (per file).
    centered = profile - profile.sum() / profile.size
    norm = math.sqrt(centered.dot(centered))
    if not math.isfinite(norm) or norm == 0.0:
        return None, None
    scores = _PROFILES @ (centered / norm)
    best = int(np.argmax(scores))
    return _PROFILE_NAMES[best], float(scores[best])
