"""``FEATURE_VERSION``: bump whenever a feature's definition or the note schema changes.

It goes into the stage fingerprint (a resume with different features refuses) and the cache key.
"""

FEATURE_VERSION = "midi-features-2"
