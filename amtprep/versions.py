"""Version tags of what stages produce, importable without the stages (no symusic, no torch).

A re-run checks a finished stage's requested settings against the commit log without building
the stage, so these must load in microseconds.
"""

# Bump whenever a MIDI feature's definition or the note schema changes: it goes into the MIDI
# stage fingerprint (a resume with different features refuses) and the feature cache key.
FEATURE_VERSION = "midi-features-4"
