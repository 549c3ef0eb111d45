"""Write real scores from music21's bundled corpus as MIDI files, for ``midi_stage.py --files``.

    pip install music21                    # not a dependency of amtprep; the corpus ships with it
    python bench/music21_corpus.py --n 300 --out /tmp/music21_midi
    python bench/midi_stage.py --files /tmp/music21_midi

Generated files (``midi_stage.py``'s default) are random notes; these are real music (Bach
chorales, string quartets, folk tunes, ...) as music21 writes it: one channel per part, music21's
10,080 ticks per quarter, tempo and meter from the score. Scores are taken in a fixed order
(MusicXML first, then Humdrum, then ABC), so a given ``--n`` always gives the same files. A score
music21 cannot parse or write is skipped and counted. Existing files are kept, so a second call
with a larger ``--n`` only adds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ORDER = (".mxl", ".xml", ".musicxml", ".krn", ".abc")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        from music21 import converter, corpus
    except ImportError:
        sys.exit("music21 is not installed: pip install music21")

    paths = sorted(
        (p for p in map(Path, corpus.getPaths()) if p.suffix in ORDER),
        key=lambda p: (ORDER.index(p.suffix), str(p)),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    written, skipped, started = 0, 0, time.perf_counter()
    for index, path in enumerate(paths):
        if written >= args.n:
            break
        target = args.out / f"{index:05d}-{path.stem}.mid"
        if not target.exists():
            try:
                converter.parse(path).write("midi", fp=str(target))
            except Exception:  # music21 fails on some scores; the corpus is large
                target.unlink(missing_ok=True)
                skipped += 1
                continue
        written += 1
    print(
        json.dumps(
            {
                "written": written,
                "skipped": skipped,
                "mb": round(sum(p.stat().st_size for p in args.out.glob("*.mid")) / 2**20, 2),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
