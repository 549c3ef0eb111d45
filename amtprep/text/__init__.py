"""Text stage: captions -> encoder embeddings (BERT-style or T5-family), offline, with an optional
disk cache.

Public API: ``TextStage`` (the stage), ``parquet_write_options(schema)`` (kwargs for writing its
tables), ``caption_failure(record, max_chars=None)``. Modules: ``model`` (find/check/load),
``family`` (what a BERT, T5 or BART config implies), ``device`` (where and in which precision),
``batching`` + ``pipeline`` (tokenise, sort, pad, prefetch), ``encoder`` (run + pool),
``packed`` (BERT forward over real tokens only), ``cache``, ``arrow`` (schema and columns),
``stage``.
"""

from amtprep.text.arrow import parquet_write_options
from amtprep.text.stage import TextStage, caption_failure

__all__ = ["TextStage", "caption_failure", "parquet_write_options"]
