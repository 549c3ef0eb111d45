"""Crash-test driver: runs amtprep in forked children that die at chosen instants, then resumes.

Run as ``python -m tests.crashkit <command> <json-args>``; it prints one JSON report. The parent
imports everything once and never runs a torch op, so each forked child starts in milliseconds
and owns its own threads; children write their stderr to per-case log files.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path

from amtprep.cli import main as cli_main
from amtprep.io import crashpoints
from tests.helpers import assert_same_output

import amtprep.midi  # noqa: F401  (imported before forking so children start fast)
import amtprep.pipeline  # noqa: F401
import amtprep.text  # noqa: F401
import transformers.models.bert.modeling_bert  # noqa: F401
from transformers import AutoConfig, AutoModel, AutoTokenizer  # noqa: F401


def fork_run(args: list[str], log_file: Path, *, crash_at=None, fail_at=None, crash_log=None, delay=0.0) -> int:
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


def reference(p: dict, work: Path) -> tuple[Path, list[str]]:
    """An uninterrupted run, and the ordered list of crash points it passed."""
    ref = work / "ref"
    points_file = work / "points.txt"
    rc = run(cli_args(p, ref), work / "ref.log", crash_log=str(points_file))
    if rc != 0:
        raise RuntimeError(f"reference run failed ({rc}): {(work / 'ref.log').read_text()[-2000:]}")
    return ref, points_file.read_text().split()


def sweep(p: dict) -> dict:
    """SIGKILL right after every write/fsync/rename/dir-fsync of the first ``batches`` commits of
    each stage (and of the merge), then resume — sometimes crashing the resume once more."""
    work = Path(p["work"])
    rng = random.Random(p.get("seed", 0))
    ref, points = reference(p, work)
    wanted = []
    for entry in points:
        point, n = entry.rsplit(":", 1)
        stage, _, step = point.partition(".")
        if (stage in ("midi", "text") and int(n) <= p.get("batches", 3)) or stage == "final":
            wanted.append(entry)
    cases = []
    for i, entry in enumerate(wanted):
        double = rng.random() < p.get("double_rate", 0.25)
        cases.append((entry, work / f"case{i}", double, rng.randint(1, 12)))
    results = run_parallel(lambda c: crash_case(p, ref, *c), cases, p.get("parallel", 2))
    return {
        "crash_points": len(wanted),
        "double_crashes": sum(1 for c in cases if c[2]),
        "mismatches": [r for r in results if r.get("mismatch")],
        "bad_exits": [r for r in results if r.get("bad_exit")],
    }


def crash_case(p: dict, ref: Path, entry: str, out: Path, double: bool, second_at: int) -> dict:
    log = out.with_suffix(".log")
    rc = run(cli_args(p, out), log, crash_at=entry)
    if rc != -signal.SIGKILL:
        return {"case": entry, "bad_exit": ["crash run", rc]}
    if double:
        rc = run(cli_args(p, out) + ["--mode", "continue"], log, crash_at=f"*:{second_at}")
        if rc not in (0, -signal.SIGKILL):
            return {"case": entry, "bad_exit": ["second crash run", rc, log.read_text()[-800:]]}
    rc = run(cli_args(p, out) + ["--mode", "continue"], log)
    if rc != 0:
        return {"case": entry, "bad_exit": ["resume", rc, log.read_text()[-800:]]}
    diff = same(ref, out)
    shutil.rmtree(out, ignore_errors=True)
    return {"case": entry, "mismatch": diff}


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
                    out.write_text(json.dumps({"case": str(item), "bad_exit": ["driver", traceback.format_exc()]}))
                    code = 1
                os._exit(code)
            running[pid] = out
        pid, _ = os.wait()
        out = running.pop(pid)
        results.append(json.loads(out.read_text()))
        out.unlink()
    return results


def random_kills(p: dict) -> dict:
    """Kill a run with SIGKILL or SIGTERM at random moments until ``kills`` kills have landed,
    then let it finish; the output must equal an uninterrupted run's."""
    work = Path(p["work"])
    rng = random.Random(p.get("seed", 1))
    ref, _ = reference(p, work)
    out, log = work / "killed", work / "killed.log"
    kills = {"SIGKILL": 0, "SIGTERM": 0}
    exits: dict[str, int] = {}
    graceful = 0
    finished_early = 0
    while sum(kills.values()) < p.get("kills", 20):
        pid = fork_run(cli_args(p, out), log, delay=p.get("delay", 0.02))
        time.sleep(rng.uniform(*p.get("window", (0.05, 1.5))))
        sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        rc = wait(pid)
        exits[str(rc)] = exits.get(str(rc), 0) + 1
        if rc == 0:
            finished_early += 1
            shutil.rmtree(out)  # finished before the signal: start over so kills keep landing mid-run
            continue
        kills[signal.Signals(sig).name] += 1
        graceful += rc == 128 + signal.SIGTERM
    rc = run(cli_args(p, out) + ["--mode", "continue"], log)
    return {
        "kills": kills,
        "graceful_sigterm_exits": graceful,
        "exit_codes": exits,
        "finished_before_signal": finished_early,
        "final_rc": rc,
        "mismatch": same(ref, out) if rc == 0 else "final run failed",
    }


if __name__ == "__main__":
    command, params = sys.argv[1], json.loads(sys.argv[2])
    result = {"sweep": sweep, "random_kills": random_kills}[command](params)
    print(json.dumps(result))
