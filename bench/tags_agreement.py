"""How often amtprep's ``--tags midicaps`` columns equal MidiCaps' own method (music21 + mido).

    python bench/music21_corpus.py --n 100 --out /tmp/music21_midi      # real scores as MIDI
    python bench/tags_agreement.py --dirs data/sample/midi /tmp/music21_midi --generated 100

Prints one JSON object: per tag, the files compared, the agreement in percent and a few
mismatches; per source folder the same. ``tempo`` is compared on files that set a tempo
(MidiCaps has no value for the others: it wrote ``''``; ours is 120 there, counted apart).
The reference is ``bench/midicaps_reference.py``; amtprep's side goes through the real path
(parse, ``schema.result_table``, ``tags.midicaps_columns``). Needs music21 (``.[test]``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests" / "midi")]

from midicaps_reference import reference_tags  # noqa: E402

from amtprep.midi.extract import FileResult, extract_bytes  # noqa: E402
from amtprep.midi.schema import result_table  # noqa: E402
from amtprep.tags import midicaps_columns  # noqa: E402

COMPARED = (
    "tempo",
    "duration",
    "time_signature",
    "key",
    "instrument_summary",
    "instrument_numbers_sorted",
)


def amtprep_tags(data: bytes, backend: str = "auto") -> dict:
    parser, features = extract_bytes(data, backend)
    rows = result_table([FileResult(sha256="", parser=parser, features=features)])
    return {name: column[0].as_py() for name, column in midicaps_columns(rows).items()}


def compare(files: list[tuple[str, bytes]], backend: str = "auto") -> dict:
    """``files`` = (source label, bytes). Files mido or music21 cannot read are counted apart."""
    tally: dict[str, dict] = {}
    skipped = no_tempo = 0
    for source, data in files:
        try:
            ref = reference_tags(data)
        except Exception:
            skipped += 1
            continue
        ours = amtprep_tags(data, backend)
        if ref["tempo"] is None:
            no_tempo += 1
        for tag in COMPARED:
            if tag == "tempo" and ref["tempo"] is None:
                continue
            for scope in ("all", source):
                entry = tally.setdefault(tag, {}).setdefault(
                    scope, {"files": 0, "equal": 0, "mismatches": []}
                )
                entry["files"] += 1
                if ours[tag] == ref[tag]:
                    entry["equal"] += 1
                elif len(entry["mismatches"]) < 3 and scope == "all":
                    entry["mismatches"].append({"ours": ours[tag], "midicaps": ref[tag]})
    for scopes in tally.values():
        for entry in scopes.values():
            entry["agreement_pct"] = round(100 * entry["equal"] / max(entry["files"], 1), 2)
    return {"tags": tally, "unreadable_by_reference": skipped, "no_tempo_event": no_tempo}


def _generated(n: int) -> list[tuple[str, bytes]]:
    from midigen import generate_midi

    return [("generated", generate_midi(seed)) for seed in range(n)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dirs", nargs="*", type=Path, default=[ROOT / "data/sample/midi"])
    parser.add_argument("--generated", type=int, default=50)
    parser.add_argument("--limit", type=int, default=0, help="files per folder (0: all)")
    parser.add_argument("--backend", default="auto", choices=["auto", "mido", "symusic"])
    args = parser.parse_args(argv)
    files = []
    for folder in args.dirs:
        paths = sorted(folder.glob("*.mid"))
        paths = paths[: args.limit] if args.limit else paths
        files += [(folder.name, p.read_bytes()) for p in paths]
    files += _generated(args.generated)
    started = time.perf_counter()
    result = compare(files, args.backend)
    result["files"] = len(files)
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
