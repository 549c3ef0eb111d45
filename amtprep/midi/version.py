"""``FEATURE_VERSION``: bump whenever a feature's definition or the note schema changes.

It goes into the stage fingerprint (a resume with different features refuses) and the cache key.
It lives in ``amtprep.versions`` so the pipeline can read it without importing this package.
"""

from amtprep.versions import FEATURE_VERSION

__all__ = ["FEATURE_VERSION"]
