"""Hostile bytes: every mutated file yields exactly one row, fast, and the stage survives."""

from __future__ import annotations

import random
import struct

import pyarrow.compute as pc
import pytest

from amtprep.config import MidiConfig
from amtprep.midi import MidiStage
from tests.midi.conftest import records_for
from tests.midi.midigen import generate_midi

SPECIAL = (0x00, 0x7F, 0x80, 0xFF, 0xF0, 0xF7)


def mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    kind = rng.randrange(9)
    if kind == 0:  # bit flips
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncation
        del out[rng.randrange(len(out)) :]
    elif kind == 2:  # overwrite a chunk length field
        pos = rng.choice(
            [4, 18] + [i + 4 for i in range(len(out) - 8) if out[i : i + 4] == b"MTrk"]
        )
        out[pos : pos + 4] = struct.pack(
            ">I", rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(1 << 16)])
        )
    elif kind == 3:  # special bytes sprinkled
        for _ in range(rng.randint(1, 6)):
            out[rng.randrange(14, len(out))] = rng.choice(SPECIAL)
    elif kind == 4:  # a long run of 0xFF where a delta time goes
        pos = rng.randrange(22, len(out))
        out[pos:pos] = b"\xff" * rng.randint(5, 2000)
    elif kind == 5:  # zero ticks per beat
        out[12:14] = b"\x00\x00"
    elif kind == 6:  # format 7
        out[8:10] = b"\x00\x07"
    elif kind == 7:  # zero tracks declared
        out[10:12] = b"\x00\x00"
    else:  # random garbage after the header
        out[14:] = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
    return bytes(out)


@pytest.mark.slow
def test_thousand_mutated_files_each_give_one_row_quickly(tmp_path):
    rng = random.Random(1234)
    bases = [generate_midi(seed, n_tracks=2, notes_per_track=20) for seed in range(10)]
    files = {f"{i}.mid": mutate(rng.choice(bases), rng) for i in range(1000)}
    records = records_for(tmp_path, files)
    config = MidiConfig(workers=2, file_timeout=5.0, cache_dir=tmp_path / "cache")
    with MidiStage(config) as stage:
        table = stage.process(records)
        counters = stage.counters()
    with MidiStage(MidiConfig(backend="mido", workers=2, file_timeout=5.0)) as stage:
        reference = stage.process(records)
    # The fast path gives the reference rows, failures included (messages aside).
    assert table.drop_columns(["parser", "error"]).equals(
        reference.drop_columns(["parser", "error"])
    )
    assert table.num_rows == 1000
    assert table.column("idx").to_pylist() == list(range(1000))
    assert counters["timeouts"] == 0 and counters["worker_deaths"] == 0
    statuses = table.column("status").to_pylist()
    assert set(statuses) == {"ok", "failed"}
    failed = table.filter(pc.equal(table.column("status"), "failed"))
    assert failed.column("error_type").null_count == 0
    assert "internal_error" not in failed.column("error_type").to_pylist()
