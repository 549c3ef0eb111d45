"""Process start-up costs that amtprep avoids.

pyarrow imports pandas on its first ``pa.array`` call whenever pandas is installed (0.4-0.8 s
per process on the project's 2-core machines, paid again by every MIDI worker at every start
and resume), though amtprep's own code never uses pandas. ``block_pandas`` refuses that import
for good in a process that runs only amtprep's code (a MIDI worker); ``without_pandas`` does it
for a block. The main process is left alone: transformers imports pandas for the text stage.
``without_torch`` does the same for torch inside a block: miditok's ``__init__`` imports its
optional PyTorch helpers (~1 s and ~300 MB per process) that tokenizing never uses, and skips
them when torch cannot be imported.

Public: ``without_pandas``, ``block_pandas``, ``without_torch``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


class _NoPandas:
    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError("amtprep runs without pandas", name=name)
        return None


@contextlib.contextmanager
def without_pandas() -> Iterator[None]:
    """pandas cannot be imported inside the block; one already imported is left as it is."""
    if "pandas" in sys.modules:
        yield
        return
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(finder)


def block_pandas() -> None:
    """For a process that only runs amtprep's own code (a MIDI worker)."""
    if "pandas" not in sys.modules and not any(isinstance(f, _NoPandas) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoPandas())


class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("amtprep imports miditok without torch", name=name)
        return None


@contextlib.contextmanager
def without_torch() -> Iterator[None]:
    """torch cannot be imported inside the block; one already imported is left as it is."""
    if "torch" in sys.modules:
        yield
        return
    finder = _NoTorch()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(finder)
