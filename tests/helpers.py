"""Helpers shared by the tests: run the CLI as a user would, compare run outputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_cli(
    *args: str, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``python process.py ARGS`` as a user would, from the repository root."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, str(REPO / "process.py"), *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_final(output_dir: Path):
    """The final rows and failures of a run as pyarrow tables (final shards in name order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted((output_dir / "final").glob("data-*.parquet"))
    final = pa.concat_tables([pq.read_table(f) for f in files]) if files else None
    failures = pq.read_table(output_dir / "failures.parquet")
    return final, failures


def assert_same_output(
    a: Path, b: Path, atol: float = 1e-5, *, failure_columns_ignored: tuple[str, ...] = ()
) -> None:
    """Same final rows and failures; embeddings equal to ``atol`` (batch composition may differ).
    ``failure_columns_ignored``: e.g. ``error``, whose text names where the file was looked for."""
    import numpy as np

    fa, xa = read_final(a)
    fb, xb = read_final(b)
    assert fa.num_rows == fb.num_rows
    assert fa.column_names == fb.column_names
    for name in fa.column_names:
        if name == "embedding":
            ea = np.asarray(fa.column(name).combine_chunks().values.to_numpy(zero_copy_only=False))
            eb = np.asarray(fb.column(name).combine_chunks().values.to_numpy(zero_copy_only=False))
            np.testing.assert_allclose(ea, eb, atol=atol, rtol=0)
        else:
            assert fa.column(name).to_pylist() == fb.column(name).to_pylist(), name
    drop = ["processed_at", *failure_columns_ignored]
    assert xa.drop_columns(drop).to_pylist() == xb.drop_columns(drop).to_pylist()


def run_args(corpus: Path, out: Path, model: Path, *extra: str) -> list[str]:
    """CLI arguments for a small, quiet run of ``corpus`` into ``out`` with text model ``model``."""
    return [
        "--input_file", str(corpus), "--output_dir", str(out), "--text_model", str(model),
        "--batch_size", "8", "--no_progress", *extra,
    ]  # fmt: skip


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


def make_tiny_bert(
    folder: Path, seed: int, *, max_position_embeddings: int = 128, model_class: str = "BertModel"
) -> Path:
    """A 2-layer, 32-wide random BERT saved with the packaged MiniLM tokenizer files
    (``model_class`` "BertForMaskedLM": its checkpoint, tensors under ``bert.``)."""
    import shutil

    import torch
    import transformers
    from transformers import BertConfig

    from amtprep.text.model import default_model_dir

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        vocab_size=30522,
        max_position_embeddings=max_position_embeddings,
    )
    getattr(transformers, model_class)(config).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(default_model_dir() / name, folder / name)
    return folder


def start_cli(args: list[str], *, delay: float, stderr=subprocess.PIPE) -> subprocess.Popen:
    """Start ``python process.py ARGS`` in the background, sleeping ``delay`` s after each batch
    so a test can act while the run is demonstrably mid-way."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "AMTPREP_TEST_BATCH_DELAY": str(delay)}
    return subprocess.Popen(
        [sys.executable, str(REPO / "process.py"), *args],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=stderr, text=True,
    )  # fmt: skip


def wait_for(directory: Path, pattern: str, timeout: float = 120) -> None:
    """Wait until ``directory.glob(pattern)`` finds a file (e.g. the first committed shard)."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if directory.is_dir() and any(directory.glob(pattern)):
            return
        time.sleep(0.02)
    raise AssertionError(f"nothing matched {directory / pattern} within {timeout} s")


def race(attempts, refused: type[BaseException]) -> tuple[list, list]:
    """Start every ``attempt()`` at once (threads behind a barrier); return the indices of
    those that returned and of those that raised ``refused``."""
    import threading

    barrier = threading.Barrier(len(attempts))
    won, lost = [], []

    def run(i):
        barrier.wait()
        try:
            attempts[i]()
            won.append(i)
        except refused:
            lost.append(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(attempts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won, lost


# ``python -c``, not ``-m``: MIDI workers start with ``spawn``, which re-imports a ``__main__``
# that has a file, and crashkit's imports (torch) would then load in every worker.
CRASHKIT = "import sys; from tests.crashkit import cli; cli(sys.argv[1:])"


def drive_crashkit(command: str, params: dict, timeout: float = 1100) -> dict:
    """Run one ``tests/crashkit.py`` command in a subprocess; returns (and prints) its report."""
    import json

    proc = subprocess.run(
        [sys.executable, "-c", CRASHKIT, command, json.dumps(params, default=str)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(command, json.dumps(report)[:2000])
    return report
