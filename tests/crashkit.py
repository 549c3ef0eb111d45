"""Crash-test driver: runs amtprep in forked children that die at chosen instants, then resumes.

Run as ``python -c DRIVER <command> <json-args>``; it prints one JSON report. The parent
imports everything once and never runs a torch op, so each forked child starts in milliseconds
and owns its own threads; children write their stderr to per-case log files.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault(
    "OMP_NUM_THREADS", "1"
)  # parallel cases on 2 cores: no thread oversubscription
import random
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path

import transformers.models.bert.modeling_bert  # noqa: F401
from transformers import AutoConfig, AutoModel, AutoTokenizer  # noqa: F401

import amtprep.midi  # noqa: F401  (imported before forking so children start fast)
import amtprep.pipeline  # noqa: F401
import amtprep.text  # noqa: F401
from amtprep.cli import main as cli_main
from amtprep.io import crashpoints
from tests.helpers import assert_same_output
from tests.s3view import materialize


def fork_run(
    args: list[str], log_file: Path, *, crash_at=None, fail_at=None, crash_log=None, delay=0.0
) -> int:
    """Start ``amtprep ARGS`` in a forked child; returns its pid."""
    pid = os.fork()
    if pid == 0:
        rc = 1
        try:
            fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 2)
            os.dup2(fd, 1)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            crashpoints.arm(crash_at=crash_at, fail_at=fail_at, log=crash_log, batch_delay=delay)
            rc = cli_main(args)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
    return pid


def wait(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def run(args, log_file, **kw) -> int:
    return wait(fork_run(args, log_file, **kw))


def same(ref: Path, out: Path) -> str | None:
    try:
        assert_same_output(ref, out)
        return None
    except AssertionError as exc:
        return f"{type(exc).__name__}: {str(exc)[:300]}"


def cli_args(p: dict, out: Path) -> list[str]:
    return [
        "--input_file", p["corpus"], "--output_dir", str(out), "--text_model", p["model"],
        "--batch_size", str(p.get("batch_size", 4)), "--no_progress", "--log_level", "info",
        *p.get("extra", []),
    ]  # fmt: skip


def reference(p: dict, work: Path, base: Path | None = None) -> tuple[Path, list[str]]:
    """An uninterrupted run (from a copy of ``base`` when given), and the ordered list of crash
    points it passed."""
    ref = work / "ref"
    if base is not None:
        shutil.copytree(base, ref, symlinks=True)
    points_file = work / "points.txt"
    rc = run(cli_args(p, ref), work / "ref.log", crash_log=str(points_file))
    if rc != 0:
        raise RuntimeError(f"reference run failed ({rc}): {(work / 'ref.log').read_text()[-2000:]}")
    return ref, points_file.read_text().split()


def read_published(out: Path, kind: str = "final"):
    """What a reader finds at the documented paths now: (idx, failure idx, statistics) or None."""
    import pyarrow.parquet as pq

    data, fails, stats = {
        "final": ("final", "failures.parquet", "statistics.json"),
        "partial": ("partial", "partial_failures.parquet", "partial/statistics.json"),
    }[kind]
    data, fails, stats = out / data, out / fails, out / stats
    if not data.exists():
        return None
    idx = []
    files = sorted(data.glob("data-*.parquet"))
    for f in files:
        idx += pq.read_table(f, columns=["idx"]).column("idx").to_pylist()
    failed = pq.read_table(fails, columns=["idx"]).column("idx").to_pylist()
    return idx, failed, json.loads(stats.read_text()), [f.name for f in files]


def read_duplicates(out: Path, kind: str, stats: dict) -> list[int]:
    """Idx of the rows a ``--dedup drop`` release left out of the data (none otherwise)."""
    import pyarrow.parquet as pq

    if ((stats.get("duplicates") or {}).get("mode")) != "drop":
        return []
    name = {"final": "duplicates.parquet", "partial": "partial_duplicates.parquet"}[kind]
    return pq.read_table(out / name, columns=["idx"]).column("idx").to_pylist()


def invariant(out: Path, kind: str = "final") -> str | None:
    """At any instant, the documented paths show one whole release: every record in exactly one
    of the data files, the failures and (``--dedup drop``) the duplicates, and statistics that
    describe exactly those files."""
    data, fails, stats = {
        "final": ("final", "failures.parquet", "statistics.json"),
        "partial": ("partial", "partial_failures.parquet", "partial/statistics.json"),
    }[kind]
    try:
        seen = read_published(out, kind)
    except (OSError, ValueError) as exc:
        return f"{kind}: unreadable at the crash point: {type(exc).__name__}: {exc}"
    if seen is None:
        visible = [n for n in (fails, stats) if (out / n).exists()]
        return f"{kind}: {visible} visible without the data folder" if visible else None
    idx, failed, st, names = seen
    try:
        dups = read_duplicates(out, kind, st)
    except (OSError, ValueError) as exc:
        return f"{kind}: duplicates unreadable at the crash point: {type(exc).__name__}: {exc}"
    problems = []
    if len(set(idx)) != len(idx):
        problems.append("a record twice in the data files")
    if set(idx) & set(failed):
        problems.append("a record in both the data and the failures")
    if len(set(dups)) != len(dups) or set(dups) & (set(idx) | set(failed)):
        problems.append("a duplicate twice, or also in the data or the failures")
    if dups and st["duplicates"]["dropped"] != len(dups):
        problems.append("statistics describe other duplicates")
    expected = st["total_records"] if kind == "final" else st["records_in_both_stages"]
    published = len(set(idx) | set(failed) | set(dups))
    if published != expected:
        problems.append(f"{published} records published, expected {expected}")
    if st["final_rows"] != len(idx) or st["final_files"] != names:
        problems.append("statistics describe other data files")
    if st["failure_rows"] != len(failed) or st["failed_records"] != len(set(failed)):
        problems.append("statistics describe other failures")
    return f"{kind}: {'; '.join(problems)}" if problems else None


def same_statistics(ref: Path, out: Path) -> str | None:
    """Counts and counters equal to the uninterrupted run's: nothing counted twice or lost."""
    a = json.loads((ref / "statistics.json").read_text())
    b = json.loads((out / "statistics.json").read_text())
    keys = ("total_records", "final_rows", "failed_records", "failure_rows")
    diffs = [k for k in keys if a[k] != b[k]]
    for stage in ("midi", "text"):
        for k in ("processed", "ok", "failed", "failed_by_type", "counters"):
            va, vb = a["stages"][stage][k], b["stages"][stage][k]
            if k == "counters":  # how often a process started its workers is not per record
                va, vb = ({c: v for c, v in d.items() if c != "workers_started"} for d in (va, vb))
            if va != vb:
                diffs.append(f"{stage}.{k}: {va} != {vb}")
    return f"statistics differ: {diffs}" if diffs else None


# lane -> (extra CLI flags, which crash points to sweep: (point, n-th time, batches) -> bool)
LANES = {
    "default": (
        [],
        lambda point, n, b: (
            point.startswith("final.") or (point.startswith(("midi.", "text.")) and n <= b)
        ),
    ),
    # the points between a shard and the next checkpoint save, where counters used to be lost
    "interval": (
        ["--checkpoint_interval", "3"],
        lambda point, n, b: point.endswith((".shard.renamed", ".log.fsynced")) and n <= 4,
    ),
    "partial": (["--save_partial"], lambda point, n, b: point.startswith(("partial.", "final."))),
    "retry": (["--retry_failed"], lambda point, n, b: True),
}


def _retry_setup(p: dict, work: Path) -> tuple[dict, Path]:
    """A finished run with one MIDI file missing; the file is back for the retry under test."""
    corpus = Path(p["corpus"])
    copy = work / "corpus"
    shutil.copytree(corpus.parent, copy)
    p = {**p, "corpus": str(copy / corpus.name)}
    away = copy / "midi" / "0003.mid"
    away.rename(away.with_suffix(".away"))
    base = work / "base"
    rc = run(cli_args(p, base), work / "base.log")
    if rc != 0:
        raise RuntimeError(f"retry setup failed ({rc})")
    away.with_suffix(".away").rename(away)
    return p, base


def sweep(p: dict) -> dict:
    """SIGKILL right after every write/fsync/rename/dir-fsync/log append of the lane's commits
    and publishes, check what a reader sees *at that instant*, then resume (sometimes crashing
    the resume once more) and compare rows and statistics with an uninterrupted run."""
    work = Path(p["work"])
    lane = p.get("lane", "default")
    extra, pick = LANES[lane]
    p = {**p, "extra": [*p.get("extra", []), *extra]}
    base = None
    if lane == "retry":
        p, base = _retry_setup(p, work)
    rng = random.Random(p.get("seed", 0))
    ref, points = reference(p, work, base)
    wanted = []
    for entry in points:
        point, n = entry.rsplit(":", 1)
        if pick(point, int(n), p.get("batches", 3)):
            wanted.append(entry)
    cases = []
    for i, entry in enumerate(wanted):
        double = rng.random() < p.get("double_rate", 0.25)
        cases.append((entry, work / f"case{i}", double, rng.randint(1, 12)))
    results = run_parallel(lambda c: crash_case(p, ref, base, *c), cases, p.get("parallel", 2))
    return {
        "lane": lane,
        "crash_points": len(wanted),
        "points": sorted({e.rsplit(":", 1)[0] for e in wanted}),
        "double_crashes": sum(1 for c in cases if c[2]),
        "invariant_checks": sum(r.get("checks", 0) for r in results),
        "invariant_failures": [r for r in results if r.get("invariant")],
        "mismatches": [r for r in results if r.get("mismatch")],
        "bad_exits": [r for r in results if r.get("bad_exit")],
    }


def crash_case(
    p: dict, ref: Path, base: Path | None, entry: str, out: Path, double: bool, second_at: int
) -> dict:
    log = out.with_suffix(".log")
    if base is not None:
        shutil.copytree(base, out, symlinks=True)
    kinds = ["final", "partial"] if "--save_partial" in p["extra"] else ["final"]
    checks = 0
    rc = run(cli_args(p, out), log, crash_at=entry)
    if rc != -signal.SIGKILL:
        return {"case": entry, "bad_exit": ["crash run", rc]}
    for kind in kinds:  # the promise holds at the crash point, not only after the resume
        checks += 1
        if bad := invariant(out, kind):
            return {"case": entry, "invariant": bad, "checks": checks}
    if double:
        rc = run(cli_args(p, out) + ["--mode", "continue"], log, crash_at=f"*:{second_at}")
        if rc not in (0, -signal.SIGKILL):
            return {"case": entry, "bad_exit": ["second crash run", rc, log.read_text()[-800:]]}
        for kind in kinds:
            checks += 1
            if bad := invariant(out, kind):
                return {"case": entry, "invariant": f"after second crash: {bad}", "checks": checks}
    rc = run(cli_args(p, out) + ["--mode", "continue"], log)
    if rc != 0:
        return {"case": entry, "bad_exit": ["resume", rc, log.read_text()[-800:]]}
    for kind in kinds:
        checks += 1
        if bad := invariant(out, kind):
            return {"case": entry, "invariant": f"after resume: {bad}", "checks": checks}
    diff = same(ref, out) or same_statistics(ref, out)
    shutil.rmtree(out, ignore_errors=True)
    return {"case": entry, "mismatch": diff, "checks": checks}


def run_parallel(fn, items: list, parallel: int) -> list[dict]:
    """Run ``fn(item)`` in forked case processes, ``parallel`` at a time; each returns a dict."""
    results: list[dict] = []
    running: dict[int, Path] = {}
    todo = list(enumerate(items))
    tmpdir = Path(os.environ.get("TMPDIR", "/tmp"))
    while todo or running:
        while todo and len(running) < parallel:
            i, item = todo.pop(0)
            out = tmpdir / f"amtprep-case-{os.getpid()}-{i}.json"
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    out.write_text(json.dumps(fn(item)))
                except BaseException:
                    out.write_text(
                        json.dumps(
                            {"case": str(item), "bad_exit": ["driver", traceback.format_exc()]}
                        )
                    )
                    code = 1
                os._exit(code)
            running[pid] = out
        pid, _ = os.wait()
        out = running.pop(pid)
        results.append(json.loads(out.read_text()))
        out.unlink()
    return results


def random_kills(p: dict) -> dict:
    """Kill runs with SIGKILL or SIGTERM at random moments until ``kills`` kills have landed
    (split over parallel lanes, each its own output dir), then let each finish; every lane's
    output must equal an uninterrupted run's."""
    work = Path(p["work"])
    ref, _ = reference(p, work)
    lanes = p.get("parallel", 2)
    per_lane = -(-p.get("kills", 20) // lanes)
    results = run_parallel(
        lambda lane: kill_lane(p, ref, lane, per_lane), list(range(lanes)), lanes
    )
    total = {"SIGKILL": 0, "SIGTERM": 0}
    for r in results:
        for k, v in r["kills"].items():
            total[k] += v
    return {
        "kills": total,
        "graceful_sigterm_exits": sum(r["graceful_sigterm_exits"] for r in results),
        "finished_before_signal": sum(r["finished_before_signal"] for r in results),
        "mismatches": [r["mismatch"] for r in results if r["mismatch"]],
        "lanes": results,
    }


def kill_lane(p: dict, ref: Path, lane: int, kills_wanted: int) -> dict:
    rng = random.Random(p.get("seed", 1) * 100 + lane)
    out, log = Path(p["work"]) / f"killed{lane}", Path(p["work"]) / f"killed{lane}.log"
    kills = {"SIGKILL": 0, "SIGTERM": 0}
    exits: dict[str, int] = {}
    graceful = finished_early = 0
    while sum(kills.values()) < kills_wanted:
        pid = fork_run(cli_args(p, out), log, delay=p.get("delay", 0.02))
        time.sleep(rng.uniform(*p.get("window", (0.05, 1.0))))
        sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        rc = wait(pid)
        exits[str(rc)] = exits.get(str(rc), 0) + 1
        if rc == 0:
            finished_early += 1
            shutil.rmtree(
                out
            )  # finished before the signal: start over so kills keep landing mid-run
            continue
        kills[signal.Signals(sig).name] += 1
        graceful += rc == 128 + signal.SIGTERM
    rc = run(cli_args(p, out) + ["--mode", "continue"], log)
    return {
        "kills": kills,
        "graceful_sigterm_exits": graceful,
        "exit_codes": exits,
        "finished_before_signal": finished_early,
        "mismatch": (same(ref, out) or same_statistics(ref, out))
        if rc == 0
        else f"final run exit {rc}",
    }


def _flip_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x04
    path.write_bytes(bytes(data))


def _newest_shard(out: Path, stage: str = "text") -> Path:
    return sorted((out / stage).glob("part-*.parquet"))[-1]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _delete_checkpoints(out: Path) -> None:
    for stage in ("midi", "text"):
        for suffix in ("", ".bak"):
            (out / f"{stage}_checkpoint.json{suffix}").unlink(missing_ok=True)


def _orphan_and_temp(out: Path) -> None:
    (out / "text" / ".part-000000012-000000015.parquet.4242.tmp").write_bytes(b"PAR1 half a shard")


CK = "text_checkpoint.json"
LOG = "text/_commits.jsonl"
REWRITTEN = "rewritten from the commit log"


def _tear_log(out: Path) -> None:
    with open(out / LOG, "ab") as fh:
        fh.write(b'{"kind": "shard", "shard": {"name": "part-0000')


def _flip_log_digit(out: Path) -> None:
    lines = (out / LOG).read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"rows": 4', b'"rows": 5')
    (out / LOG).write_bytes(b"".join(lines))


def _delete_log_and_checkpoints(out: Path) -> None:
    (out / LOG).unlink()
    _delete_checkpoints(out)


# name -> (crash point that leaves the state, damage, phrases the operator must be told)
CORRUPTIONS = {
    "empty": (
        "text.checkpoint.renamed:2",
        lambda o: (o / CK).write_bytes(b""),
        ["file is empty", REWRITTEN],
    ),
    "truncated": (
        "text.checkpoint.renamed:2",
        lambda o: _truncate(o / CK),
        ["unusable", REWRITTEN],
    ),
    "bit_flip": (
        "text.checkpoint.renamed:2",
        lambda o: _flip_bit(o / CK),
        ["unusable", REWRITTEN],
    ),
    "garbage": (
        "text.checkpoint.renamed:2",
        lambda o: (o / CK).write_bytes(os.urandom(300)),
        ["not valid JSON"],
    ),
    "wrong_content": (
        "text.checkpoint.renamed:2",
        lambda o: (o / CK).write_text(json.dumps({"stage": "text", "last_processed_idx": 99})),
        ["checksum mismatch", REWRITTEN],
    ),
    "both_copies_damaged": (
        "text.checkpoint.renamed:2",
        lambda o: (_flip_bit(o / CK), _flip_bit(o / (CK + ".bak"))),
        ["unusable", REWRITTEN],
    ),
    "all_checkpoints_deleted": (
        "text.checkpoint.renamed:2",
        _delete_checkpoints,
        ["is missing: it is " + REWRITTEN],
    ),
    "newest_shard_deleted": (
        "text.checkpoint.renamed:2",
        lambda o: _newest_shard(o).unlink(),
        ["is listed but missing"],
    ),
    "newest_shard_truncated": (
        "text.checkpoint.renamed:2",
        lambda o: _truncate(_newest_shard(o)),
        ["quarantine"],
    ),
    "orphan_shard_and_temp": (
        "text.shard.renamed:3",
        _orphan_and_temp,
        ["adopted 1 committed shard", "removed temp file"],
    ),
    "log_line_torn": (
        "text.shard.renamed:3",
        _tear_log,
        ["cut off by a crash", "adopted 1 committed shard"],
    ),
    "log_line_damaged": (
        "text.checkpoint.renamed:2",
        _flip_log_digit,
        ["damaged and were left out", "adopted 1 committed shard"],
    ),
    "log_deleted": (
        "text.checkpoint.renamed:2",
        _delete_log_and_checkpoints,
        ["rebuilt the commit log from 2 shard file(s)"],
    ),
}


def corruption(p: dict) -> dict:
    work = Path(p["work"])
    ref, _ = reference(p, work)
    results = run_parallel(
        lambda name: corruption_case(p, ref, name), list(CORRUPTIONS), p.get("parallel", 2)
    )
    return {
        "cases": len(results),
        "failures": [r for r in results if not r["ok"]],
        "results": results,
    }


def corruption_case(p: dict, ref: Path, name: str) -> dict:
    crash_at, damage, phrases = CORRUPTIONS[name]
    out = Path(p["work"]) / name
    log = out.with_suffix(".log")
    rc = run(cli_args(p, out), log, crash_at=crash_at)
    if rc != -signal.SIGKILL:
        return {"case": name, "ok": False, "why": f"crash run exit {rc}"}
    damage(out)
    before = log.stat().st_size
    rc = run(cli_args(p, out) + ["--mode", "continue"], log)
    told = log.read_text()[before:]
    missing = [ph for ph in phrases if ph not in told]
    diff = (
        (same(ref, out) or same_statistics(ref, out))
        if rc == 0
        else f"resume exit {rc}: {told[-600:]}"
    )
    return {
        "case": name,
        "ok": rc == 0 and not diff and not missing,
        "why": diff,
        "not_told": missing,
    }


# -- object storage (``--output_dir s3://``): the same promises, the bucket as the truth ------


def s3_args(p: dict, url: str, work_dir: Path) -> list[str]:
    return [*cli_args(p, Path("unused")), "--output_dir", url, "--work_dir", str(work_dir)]


def s3_invariant(url: str, view: Path) -> str | None:
    try:
        materialize(url, view)
    except FileNotFoundError as exc:
        return f"the pointer names a file the bucket lacks: {exc}"
    return invariant(view, "final")


def s3_reference(p: dict, work: Path) -> tuple[Path, list[str]]:
    url = f"{p['s3']}/ref"
    points_file = work / "points.txt"
    rc = run(s3_args(p, url, work / "ref-wd"), work / "ref.log", crash_log=str(points_file))
    if rc != 0:
        raise RuntimeError(f"reference run failed ({rc}): {(work / 'ref.log').read_text()[-2000:]}")
    return materialize(url, work / "ref"), points_file.read_text().split()


def s3_pick(point: str, n: int, batches: int) -> bool:
    """Every step that writes to the bucket, the local steps around each commit, and the publish."""
    if ".remote." in point:
        return point.startswith("final.") or n <= batches
    if point.startswith("final."):
        return True
    return point.endswith((".shard.renamed", ".log.fsynced")) and n <= batches


def s3_sweep(p: dict) -> dict:
    """As ``sweep``, with the output in a bucket; every other resume runs on a fresh working
    copy (another machine, or the local disk lost), which must give the same rows."""
    work = Path(p["work"])
    rng = random.Random(p.get("seed", 0))
    ref, points = s3_reference(p, work)
    wanted = [e for e in points if s3_pick(*_split(e), p.get("batches", 2))]
    cases = [
        (entry, i, rng.random() < p.get("double_rate", 0.25), rng.randint(1, 12))
        for i, entry in enumerate(wanted)
    ]
    results = run_parallel(lambda c: s3_crash_case(p, ref, *c), cases, p.get("parallel", 2))
    return {
        "lane": "s3",
        "crash_points": len(wanted),
        "points": sorted({e.rsplit(":", 1)[0] for e in wanted}),
        "double_crashes": sum(1 for c in cases if c[2]),
        "fresh_work_dir_resumes": sum(1 for c in cases if c[1] % 2),
        "invariant_checks": sum(r.get("checks", 0) for r in results),
        "invariant_failures": [r for r in results if r.get("invariant")],
        "mismatches": [r for r in results if r.get("mismatch")],
        "bad_exits": [r for r in results if r.get("bad_exit")],
    }


def _split(entry: str) -> tuple[str, int]:
    point, n = entry.rsplit(":", 1)
    return point, int(n)


def s3_crash_case(p: dict, ref: Path, entry: str, i: int, double: bool, second_at: int) -> dict:
    case = Path(p["work"]) / f"case{i}"
    url, log, view = f"{p['s3']}/case{i}", case.with_suffix(".log"), case / "view"
    wd = case / "wd"
    checks = 0
    rc = run(s3_args(p, url, wd), log, crash_at=entry)
    if rc != -signal.SIGKILL:
        return {"case": entry, "bad_exit": ["crash run", rc, log.read_text()[-800:]]}
    checks += 1
    if bad := s3_invariant(url, view):
        return {"case": entry, "invariant": bad, "checks": checks}
    if double:
        rc = run(s3_args(p, url, wd) + ["--mode", "continue"], log, crash_at=f"*:{second_at}")
        if rc not in (0, -signal.SIGKILL):
            return {"case": entry, "bad_exit": ["second crash run", rc, log.read_text()[-800:]]}
        checks += 1
        if bad := s3_invariant(url, view):
            return {"case": entry, "invariant": f"after second crash: {bad}", "checks": checks}
    if i % 2:  # the resume runs elsewhere: nothing local survives
        shutil.rmtree(wd)
    rc = run(s3_args(p, url, wd) + ["--mode", "continue"], log)
    if rc != 0:
        return {"case": entry, "bad_exit": ["resume", rc, log.read_text()[-800:]]}
    checks += 1
    if bad := s3_invariant(url, view):
        return {"case": entry, "invariant": f"after resume: {bad}", "checks": checks}
    diff = same(ref, view) or same_statistics(ref, view)
    shutil.rmtree(case, ignore_errors=True)
    return {"case": entry, "mismatch": diff, "checks": checks}


def s3_random_kills(p: dict) -> dict:
    """SIGKILL/SIGTERM at random moments of runs writing to a bucket, some resumes on a fresh
    working copy; the output must equal an uninterrupted run's."""
    work = Path(p["work"])
    ref, _ = s3_reference(p, work)
    rng = random.Random(p.get("seed", 1))
    url, wd, log = f"{p['s3']}/killed", work / "killed-wd", work / "killed.log"
    kills = {"SIGKILL": 0, "SIGTERM": 0}
    fresh = finished_early = 0
    while sum(kills.values()) < p.get("kills", 10):
        if rng.random() < 0.3 and wd.exists():
            shutil.rmtree(wd)
            fresh += 1
        pid = fork_run(s3_args(p, url, wd), log, delay=p.get("delay", 0.02))
        time.sleep(rng.uniform(*p.get("window", (0.05, 1.5))))
        sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        if wait(pid) == 0:  # finished before the signal: start over so kills land mid-run
            finished_early += 1
            url = f"{p['s3']}/killed{finished_early}"
            shutil.rmtree(wd, ignore_errors=True)
            continue
        kills[signal.Signals(sig).name] += 1
    rc = run(s3_args(p, url, wd) + ["--mode", "continue"], log)
    mismatch = f"final run exit {rc}: {log.read_text()[-800:]}"
    if rc == 0:
        view = materialize(url, work / "killed-view")
        mismatch = same(ref, view) or same_statistics(ref, view)
    return {
        "kills": kills,
        "fresh_work_dirs": fresh,
        "finished_before_signal": finished_early,
        "mismatch": mismatch,
    }


def cli(argv: list[str]) -> None:
    command, params = argv[0], json.loads(argv[1])
    commands = {
        "sweep": sweep,
        "random_kills": random_kills,
        "corruption": corruption,
        "s3_sweep": s3_sweep,
        "s3_random_kills": s3_random_kills,
    }
    result = commands[command](params)
    print(json.dumps(result))


# Run through ``python -c`` (see DRIVER): the MIDI workers start with ``spawn``, which re-imports
# a ``__main__`` module that has a file — this one would drag torch into every worker.
DRIVER = "import sys; from tests.crashkit import cli; cli(sys.argv[1:])"
