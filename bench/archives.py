"""Files/s of the MIDI stage reading a plain folder vs a .zip, .tar and .tar.gz MIDI root.

    python bench/archives.py                 # 1,000 generated files, workers 2, 2 rounds
    python bench/archives.py --n 300 --workers 1

Prints one JSON object: per source the best round's files/s through ``MidiStage`` (workers
started before the clock, batches of 256, as the runner feeds it), and for the archive kinds
the one-off preparation time (``prepare_archive``: the tar index; for .tar.gz the
decompression into the output dir plus the index), paid once per archive, not per run. Rounds
go round-robin so a noisy neighbour slows every source alike.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amtprep.config import MidiConfig  # noqa: E402
from amtprep.io.archives import prepare_archive  # noqa: E402
from amtprep.midi import MidiStage  # noqa: E402
from amtprep.records import Record  # noqa: E402
from tests.midi.midigen import generate_midi  # noqa: E402

BATCH = 256


def _make(folder: Path, n: int) -> list[str]:
    names = []
    for i in range(n):
        name = f"midi/{i // 100:02d}/{i:05d}.mid"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(generate_midi(i))
        names.append(name)
    return names


def _archives(folder: Path, names: list[str], work: Path) -> dict[str, Path]:
    out = {"zip": work / "corpus.zip", "tar": work / "corpus.tar", "tar.gz": work / "corpus.tar.gz"}
    with zipfile.ZipFile(out["zip"], "w", zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            zf.write(folder / name, name)
    for kind, mode in (("tar", "w"), ("tar.gz", "w:gz")):
        with tarfile.open(out[kind], mode) as tar:
            for name in names:
                tar.add(folder / name, name)
    return out


def _run(root: Path, names: list[str], workers: int, work: Path) -> float:
    archive = root if root.is_file() else None
    cfg = MidiConfig(workers=workers, archive=archive, work_dir=work)
    prefix = os.path.join(str(root), "")
    records = [Record(i, str(i), n, prefix + n, "c") for i, n in enumerate(names)]
    with MidiStage(cfg) as stage:
        stage.warm_up()
        stage.process(records[:2])  # workers up before the clock
        t = time.perf_counter()
        for start in range(0, len(records), BATCH):
            table = stage.process(records[start : start + BATCH])
            assert table.column("status").to_pylist().count("ok") == table.num_rows
        return len(records) / (time.perf_counter() - t)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = work / "files"
        names = _make(folder, args.n)
        archives = _archives(folder, names, work)
        prepare = {}
        for kind, path in archives.items():
            t = time.perf_counter()
            prepare_archive(path, work / f"out-{kind.replace('.', '')}")
            prepare[kind] = round(time.perf_counter() - t, 3)
        sources = {"dir": folder, **archives}
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for kind, root in sources.items():
                rate = _run(root, names, args.workers, work / f"out-{kind.replace('.', '')}")
                best[kind] = max(best.get(kind, 0.0), rate)
        sizes = {k: p.stat().st_size for k, p in archives.items()}
    print(
        json.dumps(
            {
                "files": args.n,
                "workers": args.workers,
                "rounds": args.rounds,
                "files_per_s": {k: round(v, 1) for k, v in best.items()},
                "relative_to_dir": {k: round(v / best["dir"], 3) for k, v in best.items()},
                "prepare_s": prepare,
                "archive_bytes": sizes,
                "cpus": os.cpu_count(),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
