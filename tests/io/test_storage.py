"""The storage seam: create-only writes that the first writer wins, locally and on S3 (moto)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import pytest

from amtprep.errors import ConfigError, ObjectExistsError
from amtprep.io.storage import LocalStorage, is_url, open_storage
from tests.helpers import race


def test_urls_and_local_paths():
    assert is_url("s3://b/k") and not is_url("/data/out") and not is_url("file:///data/out")
    assert isinstance(open_storage("file:///tmp/x"), LocalStorage)
    with pytest.raises(ConfigError, match="ftp:// is not supported"):
        open_storage("ftp://host/out")


def test_write_new_publishes_once_and_the_second_writer_is_refused(storage):
    storage.write_new("midi/part-0.parquet", b"first")
    assert storage.exists("midi/part-0.parquet")
    with pytest.raises(ObjectExistsError):
        storage.write_new("midi/part-0.parquet", b"second")
    assert storage.read("midi/part-0.parquet") == b"first"  # the loser changed nothing
    assert isinstance(ObjectExistsError("x"), FileExistsError)


def test_list_and_delete(storage):
    assert storage.list() == [] and not storage.exists("a")
    for name in ("log/000002.json", "log/000001.json", "midi/part-0.parquet"):
        storage.write_new(name, name.encode())
    assert storage.list("log") == ["log/000001.json", "log/000002.json"]
    assert storage.list() == ["log/000001.json", "log/000002.json", "midi/part-0.parquet"]
    storage.delete("log/000001.json")
    storage.delete("log/never-written")  # deleting what is not there is not an error
    assert storage.list("log") == ["log/000002.json"]
    assert storage.url("log/000002.json").endswith("log/000002.json")


def test_writers_racing_for_one_name_leave_exactly_one_complete_object(storage):
    payloads = [bytes([i]) * 200_000 for i in range(6)]
    writes = [functools.partial(storage.write_new, "shard", data) for data in payloads]
    won, lost = race(writes, ObjectExistsError)
    assert len(won) == 1 and len(lost) == len(payloads) - 1
    assert storage.read("shard") == payloads[won[0]]
    assert storage.list() == ["shard"]  # no temp file left behind


def test_a_multipart_object_is_create_only_too(s3_root):
    storage = open_storage(f"{s3_root}/multipart")
    big = b"\x01" * (12 * 1024 * 1024)  # past s3fs's 5 MiB block: a multipart upload
    storage.write_new("big.parquet", big)
    with pytest.raises(ObjectExistsError):
        storage.write_new("big.parquet", b"\x02" * (12 * 1024 * 1024))
    assert storage.read("big.parquet") == big


def test_a_crash_before_the_link_leaves_no_final_object(tmp_path):
    """Locally the name appears only by ``os.link`` of a complete, fsync'd temp file: a kill
    before it leaves a hidden temp file that ``list`` ignores, and the name is still free."""
    root = tmp_path / "out"
    code = (
        "from amtprep.io.storage import open_storage;"
        f"open_storage({str(root)!r}).write_new('shard', b'x' * 1000)"
    )
    env = {**os.environ, "AMTPREP_CRASH_AT": "storage.fsynced:1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, check=False)
    assert proc.returncode == -9
    storage = open_storage(root)
    assert storage.list() == [] and not storage.exists("shard")
    storage.write_new("shard", b"y")  # the retry publishes
    assert storage.read("shard") == b"y"


def test_midi_bytes_read_from_a_bucket_fail_as_files_do(s3_root):
    """Workers read MIDI files in a bucket with one ranged GET: missing, empty and too large
    objects get the same named errors as files on disk."""
    from amtprep.midi.errors import EmptyFileError, MissingFileError, TooLargeError
    from amtprep.midi.extract import read_midi_bytes

    st = open_storage(f"{s3_root}/midi-read")
    st.write_new("ok.mid", b"MThd" + bytes(20))
    st.write_new("empty.mid", b"")
    st.write_new("big.mid", bytes(1000))
    base = f"{s3_root}/midi-read"
    assert read_midi_bytes(f"{base}/ok.mid", 100) == b"MThd" + bytes(20)
    with pytest.raises(MissingFileError, match="no such object"):
        read_midi_bytes(f"{base}/absent.mid", 100)
    with pytest.raises(EmptyFileError):
        read_midi_bytes(f"{base}/empty.mid", 100)
    with pytest.raises(TooLargeError):
        read_midi_bytes(f"{base}/big.mid", 999)
    assert len(read_midi_bytes(f"{base}/big.mid", 1000)) == 1000
