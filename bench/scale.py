"""Scale benchmark (issue 10): commit cost at thousands of shards, and a 1M-record job end to
end; prints one JSON object.

    python bench/scale.py                    # 1M records, commit cost at 3,907 and 15,625 shards
    python bench/scale.py --quick            # smoke run: 10k records, 250 shards (< 1 minute)
    python bench/scale.py --records 200000   # end to end at 200k
    python bench/scale.py --part commit --shards 2000

Part 1, ``commit`` (in process, on the real API): the runner's commit path for a 1M-record job
at batch 256 (3,907 shards) and batch 64 (15,625 shards). One real MIDI-stage table of the batch
size is built once (``MidiStage`` on files from ``amtprep.sample``, with the columns and footer
the runner adds); for each shard its idx column is set to the shard's range, then
``write_shard`` + ``StageStore.commit`` + ``StageStore.save_summary`` are timed (the runner's
default ``--checkpoint_interval 1``). It reports the first and last 100 commits (mean, median,
and each step apart), the log and checkpoint sizes at the end, and ``recover`` of the finished
store (what every start pays). ``--shards`` commits fewer shards of the same job.

Part 2, ``e2e`` (the CLI in subprocesses, ``process.py --stages midi --workers 2 --batch_size 256
--no_progress --log_level warning``), at each size of ``--sizes`` (default 100k, 200k and
``--records``): an input ``.jsonl`` whose ``location`` cycles over 50 real MIDI files (``tiny``:
written here with mido, 8-24 notes; ``sample``: ``python -m amtprep.sample --n 50``), then

- the full run: wall time, files/s, peak RSS of the child's process tree and of its main process
  (psutil, sampled every 0.1 s from a separate process);
- re-runs of the finished job (same command): wall time, and every file of the output dir
  compared before and after (size, mtime, inode) -- state files (shards, commit log,
  checkpoints, input identity) must not change; the lock note and ``amtprep.log`` are the run's
  own bookkeeping and are listed apart;
- resumes: a copy of the finished output dir with its last ``--resume_k`` shards taken off the
  end of the commit log and off disk (shards hard-linked, everything else copied), then
  ``--mode continue``: time from starting it to the first new shard file on disk and to the
  first new log line, and to the end; the resumed log must name the same shards as the original.

Every CLI run reports ``seconds`` (wall) and ``cpu_s`` (user + system of the child and its
workers, from ``getrusage``: less sensitive than wall time to a busy machine), and where the
run's ``amtprep.log`` says so, ``recovered_s`` (the stores recovered, "resuming from ...") and
``nothing_to_do_s`` (the finished stage skipped), both from launch. ``cli_floor_s`` is
``python process.py --help``: interpreter start and the CLI's first imports, which every re-run
and resume pays. One 512-record run off the record warms the page cache and the children's
bytecode cache first: the children keep bytecode under the work dir (``PYTHONPYCACHEPREFIX``),
as an installed package has its .pyc files, even where the environment sets
``PYTHONDONTWRITEBYTECODE`` (``--no_pyc`` leaves the environment as it is). ``goals`` checks
issue 10's targets as [measured, target, met]; the 200k targets apply to every size up to 200k.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mido
import numpy as np
import psutil
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from amtprep.commit.log import LOG_NAME  # noqa: E402
from amtprep.commit.store import StageStore, batch_metadata  # noqa: E402
from amtprep.config import MidiConfig  # noqa: E402
from amtprep.io.readers import InputSource, InputSpec  # noqa: E402
from amtprep.io.shards import parse_shard_name, write_shard  # noqa: E402
from amtprep.midi import MidiStage  # noqa: E402
from amtprep.records import Record  # noqa: E402
from amtprep.runner import StageRunner  # noqa: E402
from amtprep.sample import generate  # noqa: E402

JOB_RECORDS = 1_000_000
CORPUS_FILES = 50
CLI_FLAGS = [
    "--stages", "midi", "--workers", "2", "--batch_size", "256",
    "--no_progress", "--log_level", "warning",
]  # fmt: skip
# Files a run may touch as its own bookkeeping; everything else in the output dir is state.
BOOKKEEPING = {".amtprep.lock", "amtprep.log"}


def note(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ms(values: list[float]) -> dict:
    return {
        "mean_ms": round(1000 * statistics.fmean(values), 3),
        "median_ms": round(1000 * statistics.median(values), 3),
    }


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


# -- peak RSS of another process tree, from a separate process -------------------------------
def _sample_tree(conn, interval: float, rescan: float) -> None:
    conn.send("ready")
    root = psutil.Process(conn.recv())
    procs, scanned, peak, peak_main = [root], 0.0, 0, 0
    while True:  # sample first, so a run shorter than ``interval`` is still seen
        if time.monotonic() - scanned >= rescan:
            with contextlib.suppress(psutil.Error):
                procs = [root, *root.children(recursive=True)]
            scanned = time.monotonic()
        total = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):  # a process may exit mid-sample
                rss = proc.memory_info().rss
                total += rss
                if proc is root:
                    peak_main = max(peak_main, rss)
        peak = max(peak, total)
        if conn.poll(interval):
            break
    conn.send((peak, peak_main))


class TreeRss:
    """Peak RSS of a child's process tree (and of the child alone), sampled every 0.1 s from a
    spawned process, so the bench's own threads neither add to it nor slow what it measures."""

    def __init__(self, interval: float = 0.1, rescan: float = 0.25) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_sample_tree, args=(child, interval, rescan), daemon=True)
        self._proc.start()
        child.close()
        self._conn.recv()
        self.peak = self.peak_main = 0

    def watch(self, pid: int) -> None:
        self._conn.send(pid)

    def stop(self) -> None:
        self._conn.send("stop")
        self.peak, self.peak_main = self._conn.recv()
        self._proc.join()


# -- corpus and inputs -----------------------------------------------------------------------
def tiny_corpus(folder: Path) -> list[dict]:
    """50 small real type-1 MIDI files (conductor track + one instrument, 8-24 notes)."""
    (folder / "midi").mkdir(parents=True, exist_ok=True)
    rng = random.Random(10)
    rows = []
    for i in range(CORPUS_FILES):
        midi = mido.MidiFile(type=1, ticks_per_beat=480)
        conductor = mido.MidiTrack()
        conductor.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(80 + i)))
        conductor.append(mido.MetaMessage("time_signature", numerator=3 + i % 2, denominator=4))
        conductor.append(mido.MetaMessage("end_of_track"))
        track = mido.MidiTrack()
        track.append(mido.Message("program_change", program=i % 128, channel=i % 9))
        for _ in range(8 + i % 17):
            pitch = rng.randint(48, 84)
            track.append(
                mido.Message("note_on", note=pitch, velocity=rng.randint(40, 110), channel=i % 9)
            )
            track.append(mido.Message("note_off", note=pitch, velocity=64, channel=i % 9, time=240))
        track.append(mido.MetaMessage("end_of_track"))
        midi.tracks.extend([conductor, track])
        location = f"midi/{i:04d}.mid"
        midi.save(folder / location)
        rows.append({"location": location, "caption": f"A short test piece, number {i}."})
    return rows


def sample_corpus(folder: Path) -> list[dict]:
    paired = generate(folder, CORPUS_FILES)
    return [json.loads(line) for line in paired.read_text().splitlines()]


def write_input(path: Path, rows: list[dict], n: int) -> None:
    lines = [json.dumps(row) + "\n" for row in rows]
    with path.open("w") as f:
        for start in range(0, n, 10_000):
            f.write("".join(lines[i % len(lines)] for i in range(start, min(n, start + 10_000))))


# -- part 1: commit cost ---------------------------------------------------------------------
def shard_table(corpus: Path, rows: list[dict], batch: int, work: Path) -> tuple[pa.Table, dict]:
    """One real MIDI-stage table of ``batch`` rows, as the runner writes it (run columns and
    footer included), and the identity the runner begins the stage with."""
    spec = InputSpec(path=corpus / "train.jsonl")
    source = InputSource(spec)
    input_fp = source.fingerprint()
    recs = [
        Record(i, str(i), rows[i % len(rows)]["location"],
               str(corpus / rows[i % len(rows)]["location"]), rows[i % len(rows)]["caption"])
        for i in range(batch)
    ]  # fmt: skip
    with MidiStage(MidiConfig(workers=1, cache_dir=work / "nocache")) as stage:
        scratch = StageStore("midi", work / "scratch", work / "scratch.json")
        runner = StageRunner(stage, scratch, total_files=JOB_RECORDS, input_fp=input_fp,
                             batch_size=batch)  # fmt: skip
        table = runner._process(recs, attempts=np.ones(batch, dtype=np.int32))
        identity = {
            "total_files": JOB_RECORDS,
            "input": input_fp,
            "settings": stage.fingerprint(),
            "request": {"backend": "auto"},
        }
        counters = dict(stage.counters())
    assert table.num_rows == batch
    return table, {"identity": identity, "counters": counters}


STEPS = ("write_shard", "commit", "save_summary")


class CommitPath:
    """One stage's store and the runner's commit path for one shard, timed step by step."""

    def __init__(self, out: Path, identity: dict, batch: int, job_shards: int) -> None:
        self.shard_dir, self.ck = out / "midi", out / "midi_checkpoint.json"
        self.store = StageStore("midi", self.shard_dir, self.ck)
        self.store.recover()
        self.store.begin(identity)
        self.batch, self.job_shards = batch, job_shards
        self.t_run = time.perf_counter()
        self.steps: dict[str, list[float]] = {s: [] for s in STEPS}
        self.total: list[float] = []
        self.cpu: list[float] = []  # this process's CPU time: the commit path less its waits

    def commit(self, t: pa.Table, first: int, last: int, counters: dict) -> None:
        store = self.store
        c0, t0 = time.process_time(), time.perf_counter()
        entry = write_shard(self.shard_dir, t, first, last, crash_tag="midi.shard")
        t1 = time.perf_counter()
        store.commit(entry, counters, 0.1)
        t2 = time.perf_counter()
        store.save_summary({
            "current_batch": len(store.live), "total_batches": self.job_shards,
            "batch_size": self.batch, "processing_time": round(store.seconds, 3),
            "last_batch_time": round(t2 - t0, 4),
            "files_per_second": round(store.processed / (t2 - self.t_run), 2),
        })  # fmt: skip
        t3, c3 = time.perf_counter(), time.process_time()
        for name, dt in zip(STEPS, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            self.steps[name].append(dt)
        self.total.append(t3 - t0)
        self.cpu.append(c3 - c0)


def commit_cost(batch: int, shards: int | None, corpus: Path, rows: list[dict], tmp: Path) -> dict:
    """The runner's commit path for shards 0..n-1 of a 1M-record job. While the last ``k`` are
    committed, a second, fresh store in the same folder tree takes its first ``k`` commits,
    alternating one for one: ``paired_ratio_median`` compares the two under the same disk and
    CPU load, which the first-vs-last ratio (minutes apart) cannot on a shared machine."""
    job_shards = -(-JOB_RECORDS // batch)
    n = min(shards or job_shards, job_shards)
    k = min(100, n // 2)
    work = Path(tempfile.mkdtemp(prefix=f"commit-b{batch}-", dir=tmp))
    try:
        table, info = shard_table(corpus, rows, batch, work)
        per_row = {key: v / batch for key, v in info["counters"].items()}
        idx_pos = table.schema.get_field_index("idx")
        idx_field = table.schema.field(idx_pos)

        def shard(i: int) -> tuple[pa.Table, int, int, dict]:
            first = i * batch
            last = min(first + batch, JOB_RECORDS) - 1
            rows_here = last - first + 1
            t = table if rows_here == batch else table.slice(0, rows_here)
            t = t.set_column(idx_pos, idx_field, pa.array(np.arange(first, last + 1), pa.int64()))
            counters = {key: round(v * rows_here) for key, v in per_row.items() if v}
            meta = {**(table.schema.metadata or {}), **batch_metadata(counters, 0.1)}
            return t.replace_schema_metadata(meta), first, last, counters

        main = CommitPath(work / "out", info["identity"], batch, job_shards)
        control = CommitPath(work / "control", info["identity"], batch, job_shards)
        note(f"commit cost: batch {batch}, {n} of {job_shards} shards")
        for i in range(n):
            main.commit(*shard(i))
            if i >= n - k:
                control.commit(*shard(i - (n - k)))
            if (i + 1) % 1000 == 0:
                note(f"  {i + 1}/{n} shards, last {1000 * main.total[-1]:.1f} ms")
        main.store.close()
        control.store.close()
        total = main.total
        first_k, last_k, paired = ms(total[:k]), ms(total[-k:]), ms(control.total)
        t0 = time.perf_counter()
        fresh = StageStore("midi", main.shard_dir, main.ck)
        fresh.recover()
        recover_s = time.perf_counter() - t0
        assert len(fresh.live) == n, (len(fresh.live), n)
        shard_bytes = sum(e.stat().st_size for e in os.scandir(main.shard_dir) if e.is_file())
        tenth = max(1, n // 10)
        log_bytes = (main.shard_dir / LOG_NAME).stat().st_size
        return {
            "batch_size": batch,
            "job_records": JOB_RECORDS,
            "job_shards": job_shards,
            "shards_committed": n,
            "window": k,
            "first": first_k,
            "last": last_k,
            "ratio_mean": ratio(last_k["mean_ms"], first_k["mean_ms"]),
            "ratio_median": ratio(last_k["median_ms"], first_k["median_ms"]),
            "paired_fresh_store": paired,
            "paired_ratio_median": ratio(last_k["median_ms"], paired["median_ms"]),
            "paired_ratio_mean": ratio(last_k["mean_ms"], paired["mean_ms"]),
            "cpu_first": ms(main.cpu[:k]),
            "cpu_last": ms(main.cpu[-k:]),
            "cpu_ratio_median": ratio(
                statistics.median(main.cpu[-k:]), statistics.median(main.cpu[:k])
            ),
            "steps_first": {name: ms(v[:k]) for name, v in main.steps.items()},
            "steps_last": {name: ms(v[-k:]) for name, v in main.steps.items()},
            "steps_paired_fresh_store": {name: ms(v) for name, v in control.steps.items()},
            "median_ms_by_tenth": [
                round(1000 * statistics.median(total[j : j + tenth]), 1)
                for j in range(0, tenth * 10, tenth)
            ],
            "all_mean_ms": round(1000 * statistics.fmean(total), 3),
            "p99_ms": round(1000 * float(np.percentile(total, 99)), 3),
            "total_s": round(sum(total), 2),
            "log_bytes": log_bytes,
            "log_bytes_per_entry": round(log_bytes / (n + 1), 1),
            "checkpoint_bytes": main.ck.stat().st_size,
            "shard_mb": round(shard_bytes / 2**20, 1),
            "recover_s": round(recover_s, 3),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- part 2: end to end ----------------------------------------------------------------------
CHILD_ENV = dict(os.environ)


def use_pycache(folder: Path) -> None:
    """Let the children keep compiled bytecode in ``folder`` (an installed package has .pyc
    files; with PYTHONDONTWRITEBYTECODE set, every process would compile amtprep again)."""
    CHILD_ENV.pop("PYTHONDONTWRITEBYTECODE", None)
    CHILD_ENV["PYTHONPYCACHEPREFIX"] = str(folder)


def cli(input_file: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, str(REPO / "process.py"), "--input_file", str(input_file),
        "--output_dir", str(out), *CLI_FLAGS, *extra,
    ]  # fmt: skip


def log_mark(run_log: Path, offset: int, text: str) -> float | None:
    """Epoch of the first line after ``offset`` in the run's amtprep.log containing ``text``."""
    try:
        with run_log.open("rb") as f:
            f.seek(offset)
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        if text in line:
            stamp, _, millis = line[:23].partition(",")
            with contextlib.suppress(ValueError):
                return time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1e3
    return None


def run_cli(
    cmd: list[str],
    log: Path,
    out: Path,
    *,
    rss: bool = False,
    first_new: str | None = None,
    log_size: int | None = None,
) -> dict:
    """Run one CLI command; wall and CPU seconds (the child and its workers), peak RSS with
    ``rss``, and with ``first_new`` the time to that shard file and to the next log line."""
    sampler = TreeRss() if rss else None
    run_log = out / "amtprep.log"
    offset = run_log.stat().st_size if run_log.exists() else 0
    shard, commit_log = out / "midi" / str(first_new), out / "midi" / LOG_NAME
    t_shard = t_log = None
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log.open("ab") as err:
        epoch, t0 = time.time(), time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=err, stderr=err, env=CHILD_ENV)
        if sampler:
            sampler.watch(proc.pid)
        while first_new and proc.poll() is None and (t_shard is None or t_log is None):
            now = time.perf_counter()
            if t_shard is None and shard.exists():
                t_shard = now
            if t_log is None and commit_log.stat().st_size > (log_size or 0):
                t_log = now
            time.sleep(0.002)
        rc = proc.wait()
        t_end = time.perf_counter()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    res = {"seconds": round(t_end - t0, 3), "cpu_s": round(cpu, 2)}
    if sampler:
        sampler.stop()
        res["peak_rss_mb"] = round(sampler.peak / 2**20, 1)
        res["peak_rss_main_mb"] = round(sampler.peak_main / 2**20, 1)
    if first_new:
        res["first_shard_s"] = round((t_shard or t_end) - t0, 3)
        res["first_log_line_s"] = round((t_log or t_end) - t0, 3)
    for key, text in (("recovered_s", "resuming from"), ("nothing_to_do_s", "nothing to do")):
        mark = log_mark(run_log, offset, text)
        if mark is not None:
            res[key] = round(mark - epoch, 3)
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-20:]
        raise RuntimeError(f"{' '.join(cmd)} exited {rc}:\n" + "\n".join(tail))
    return res


def snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    out = {}
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(root, name)
            st = path.lstat()
            out[str(path.relative_to(folder))] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return out


def compare(before: dict, after: dict) -> dict:
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    added, removed = sorted(after.keys() - before.keys()), sorted(before.keys() - after.keys())
    touched = changed + added + removed
    state = [p for p in touched if Path(p).name not in BOOKKEEPING]
    return {
        "state_files_changed": len(state),
        "state_examples": state[:5],
        "bookkeeping_touched": sorted(p for p in touched if Path(p).name in BOOKKEEPING),
    }


def log_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def shard_names(lines: list[bytes]) -> list[str]:
    bodies = [json.loads(x) for x in lines]
    return [b["shard"]["name"] for b in bodies if b.get("kind") == "shard"]


def resume_copy(src: Path, dst: Path, k: int) -> tuple[str, int]:
    """``src`` less its last ``k`` committed shards (off the log's end and off disk); shards are
    hard-linked, other files copied. Returns the first removed shard's name and the log size."""
    lines = log_lines(src / "midi" / LOG_NAME)
    dropped = set(shard_names(lines[-k:]))
    assert len(dropped) == k, "the log does not end in shard lines"
    first_new = min(dropped)
    for root, _dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            if name == LOG_NAME or name in dropped:
                continue
            if parse_shard_name(name) is not None:
                os.link(Path(root, name), dst / rel / name)
            else:
                shutil.copy2(Path(root, name), dst / rel / name)
    kept = b"".join(lines[:-k])
    (dst / "midi" / LOG_NAME).write_bytes(kept)
    return first_new, len(kept)


def median_of(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if key in r]
    return round(statistics.median(values), 3) if values else None


def e2e_size(
    n: int, rows: list[dict], corpus: Path, work: Path, repeats: int, resume_k: int
) -> dict:
    input_file = corpus / f"input-{n}.jsonl"  # locations are relative to the input's folder
    write_input(input_file, rows, n)
    out = work / f"out-{n}"
    log = work / f"stderr-{n}.log"
    note(f"e2e {n:,} records: full run")
    load_before = os.getloadavg()[0]
    full = run_cli(cli(input_file, out), log, out, rss=True)
    lines = log_lines(out / "midi" / LOG_NAME)
    shards = shard_names(lines)
    summary = json.loads((out / "midi_checkpoint.json").read_text())
    if summary["processed"] != n or not summary["complete"] or summary["failed"]:
        raise RuntimeError(f"the {n:,}-record run did not process every record: {summary}")
    result = {
        "records": n,
        "input_mb": round(input_file.stat().st_size / 2**20, 1),
        "full_run_s": full["seconds"],
        "full_run_cpu_s": full["cpu_s"],
        "files_per_s": round(n / full["seconds"], 1),
        "peak_rss_mb": full["peak_rss_mb"],
        "peak_rss_main_mb": full["peak_rss_main_mb"],
        "shards": len(shards),
        "log_bytes": (out / "midi" / LOG_NAME).stat().st_size,
        "checkpoint_bytes": (out / "midi_checkpoint.json").stat().st_size,
        "load_avg_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    note(f"e2e {n:,}: {full['seconds']} s; re-runs")
    reruns, touched = [], []
    for _ in range(repeats):
        before = snapshot(out)
        reruns.append(run_cli(cli(input_file, out), log, out))
        touched.append(compare(before, snapshot(out)))
    result["rerun"] = reruns
    result["rerun_median_s"] = median_of(reruns, "seconds")
    result["rerun_touched"] = touched[-1]
    result["rerun_state_files_changed"] = max(t["state_files_changed"] for t in touched)
    note(f"e2e {n:,}: resumes (last {resume_k} shards removed)")
    resumes = []
    for r in range(repeats):
        copy = work / f"resume-{n}-{r}"
        first_new, log_size = resume_copy(out, copy, resume_k)
        cmd = cli(input_file, copy, "--mode", "continue")
        resumes.append(run_cli(cmd, log, copy, first_new=first_new, log_size=log_size))
        same = shard_names(log_lines(copy / "midi" / LOG_NAME)) == shards
        resumes[-1]["same_shards_as_full_run"] = same
        shutil.rmtree(copy)
    result["resume_k_shards"] = resume_k
    result["resume"] = resumes
    for key in ("first_shard_s", "first_log_line_s", "recovered_s"):
        result[f"resume_{key.removesuffix('_s')}_median_s"] = median_of(resumes, key)
    return result


def warmup(rows: list[dict], corpus: Path, work: Path) -> float:
    """One small run off the record: fills the children's bytecode cache and the page cache."""
    input_file = corpus / "input-warmup.jsonl"
    write_input(input_file, rows, 512)
    seconds = run_cli(cli(input_file, work / "warmup"), work / "stderr-warmup.log", work / "warmup")
    shutil.rmtree(work / "warmup")
    return seconds["seconds"]


def cli_floor(work: Path) -> float:
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / "process.py"), "--help"], cwd=REPO,
                       stdout=subprocess.DEVNULL, env=CHILD_ENV, check=True)  # fmt: skip
        times.append(time.perf_counter() - t0)
    return round(min(times), 3)


# -- goals -----------------------------------------------------------------------------------
def goals(report: dict) -> dict:
    """Issue 10's targets, each as [measured, target, met]."""
    out: dict[str, list] = {}
    for c in report.get("commit_cost", []):
        b = c["batch_size"]
        out[f"commit_last_over_first_median_b{b}"] = [c["ratio_median"], "<= 1.2",
                                                      c["ratio_median"] <= 1.2]  # fmt: skip
        out[f"commit_last_over_first_mean_b{b}"] = [c["ratio_mean"], "<= 1.2",
                                                    c["ratio_mean"] <= 1.2]  # fmt: skip
        out[f"commit_last_over_fresh_store_paired_median_b{b}"] = [
            c["paired_ratio_median"], "<= 1.2", c["paired_ratio_median"] <= 1.2]  # fmt: skip
    sizes = report.get("e2e", {}).get("sizes", [])
    for s in sizes:
        n = s["records"]
        want = 1.0 if n <= 200_000 else 2.0
        out[f"rerun_s_{n}"] = [s["rerun_median_s"], f"<= {want}", s["rerun_median_s"] <= want]
        changed = s["rerun_state_files_changed"]
        out[f"rerun_state_files_changed_{n}"] = [changed, "== 0", changed == 0]
        if n <= 200_000:
            got = s["resume_first_shard_median_s"]
            out[f"resume_first_shard_s_{n}"] = [got, "<= 1.5", got <= 1.5]
        same = all(r["same_shards_as_full_run"] for r in s["resume"])
        out[f"resume_same_shards_{n}"] = [same, "== true", same]
    if len(sizes) >= 2:
        small, big = sizes[0], sizes[-1]
        change = round(100 * (big["peak_rss_mb"] - small["peak_rss_mb"]) / small["peak_rss_mb"], 1)
        key = f"rss_change_pct_{small['records']}_to_{big['records']}"
        out[key] = [change, "within +-10", abs(change) <= 10]
    return out


def git_state() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout

    dirty = [line[3:] for line in git("status", "--porcelain", "amtprep").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "amtprep_uncommitted": dirty}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10k records, 250 shards, 1 repeat")
    parser.add_argument("--part", choices=("all", "commit", "e2e"), default="all")
    parser.add_argument("--records", type=int, help="largest e2e size (default 1,000,000)")
    parser.add_argument("--sizes", help="comma list of e2e sizes (default 100k,200k,--records)")
    parser.add_argument("--shards", type=int, help="shards to commit per batch size (default all)")
    parser.add_argument("--batch_sizes", default="256,64", help="part 1 batch sizes")
    parser.add_argument("--corpus", choices=("tiny", "sample"), default="tiny",
                        help="e2e MIDI files: tiny (mido, 8-24 notes) or amtprep.sample")  # fmt: skip
    parser.add_argument("--repeats", type=int, help="re-runs and resumes per size (default 3)")
    parser.add_argument("--resume_k", type=int, default=8, help="shards removed for a resume")
    parser.add_argument("--tmp", type=Path, default=Path("/tmp"), help="work dir's parent")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    parser.add_argument("--no_pyc", action="store_true",
                        help="run the children in this environment as it is (by default they "
                        "keep bytecode in the work dir, overriding PYTHONDONTWRITEBYTECODE)")  # fmt: skip
    args = parser.parse_args(argv)

    records = args.records or (10_000 if args.quick else JOB_RECORDS)
    shards = args.shards or (250 if args.quick else None)
    repeats = args.repeats or (1 if args.quick else 3)
    if args.sizes:
        sizes = sorted({int(s) for s in args.sizes.split(",")})
    else:
        sizes = sorted({s for s in (100_000, 200_000) if s < records} | {records})
        if len(sizes) == 1:
            sizes = [records // 4, records]
    args.tmp.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="amtprep-scale-", dir=args.tmp))
    if not args.no_pyc:
        use_pycache(work / "pycache")
    report: dict = {
        "machine": {
            "cpus": psutil.cpu_count(),
            "python": platform.python_version(),
            "pyarrow": pa.__version__,
            "tmp": str(args.tmp),
            "load_avg_start": [round(x, 2) for x in os.getloadavg()],
            "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE"),
            "children_bytecode": "as the environment says"
            if args.no_pyc
            else "cached in the work dir (PYTHONPYCACHEPREFIX)",
        },
        "git": git_state(),
    }
    t_start = time.perf_counter()
    try:
        if args.part in ("all", "commit"):
            corpus = work / "sample"
            rows = sample_corpus(corpus)
            report["commit_cost"] = [
                commit_cost(int(b), shards, corpus, rows, work) for b in args.batch_sizes.split(",")
            ]
        if args.part in ("all", "e2e"):
            corpus = work / "corpus"
            rows = tiny_corpus(corpus) if args.corpus == "tiny" else sample_corpus(corpus)
            midi = sorted((corpus / "midi").iterdir())
            report["e2e"] = {
                "command": " ".join(
                    ["python process.py --input_file IN --output_dir OUT", *CLI_FLAGS]
                ),  # fmt: skip
                "corpus": {
                    "kind": args.corpus,
                    "files": len(midi),
                    "mean_bytes": round(statistics.fmean(p.stat().st_size for p in midi)),
                    "made_by": "mido, in bench/scale.py (tiny_corpus)"
                    if args.corpus == "tiny"
                    else "python -m amtprep.sample --n 50",
                },
                "warmup_s": warmup(rows, corpus, work),
                "cli_floor_s": cli_floor(work),
                "repeats": repeats,
                "sizes": [],
            }
            for n in sizes:
                result = e2e_size(n, rows, corpus, work, repeats, args.resume_k)
                report["e2e"]["sizes"].append(result)
                shutil.rmtree(work / f"out-{n}", ignore_errors=True)
                (corpus / f"input-{n}.jsonl").unlink(missing_ok=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["bench_s"] = round(time.perf_counter() - t_start, 1)
    report["goals"] = goals(report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
