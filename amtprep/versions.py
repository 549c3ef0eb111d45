"""Version tags of what stages produce, importable without the stages (no symusic, no torch).

A re-run checks a finished stage's requested settings against the commit log without building
the stage, so these must load in microseconds. ``miditok_version()`` and ``symusic_version()``
read the installed distributions' metadata (no import): they go into the MIDI stage's identity
when tokens are on, so a resume under another miditok refuses instead of mixing token ids.
"""

from __future__ import annotations

from importlib import metadata

# Bump whenever a MIDI feature's definition or the note schema changes: it goes into the MIDI
# stage fingerprint (a resume with different features refuses) and the feature cache key.
FEATURE_VERSION = "midi-features-3"


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def miditok_version() -> str | None:
    """The installed miditok's version, or None when it is not installed."""
    return _version("miditok")


def symusic_version() -> str | None:
    return _version("symusic")
