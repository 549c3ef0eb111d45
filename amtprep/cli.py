"""Command line: argparse -> RunConfig -> pipeline.run.

``process.py``, ``continue_from_checkpoint.py`` and the ``amtprep`` console command all land in
``main``. Every flag accepts ``--snake_case`` and ``--kebab-case``. Operator errors print one line
(no traceback unless ``--log_level debug``) and exit non-zero.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from amtprep.config import (
    MODES,
    ROWS_PER_FINAL_SHARD,
    STAGES,
    MidiConfig,
    RunConfig,
    TextConfig,
    TokenConfig,
    default_cache_dir,
)
from amtprep.errors import AmtprepError, ConfigError, Interrupted


@contextlib.contextmanager
def logging_redirect_tqdm():
    """Route log lines around the progress bars (tqdm's helper, imported lazily).

    tqdm's replacement handler does not copy the console handler's level, so it is set here:
    ``--log_level warning`` must not print every batch's INFO line.
    """
    from tqdm.contrib.logging import logging_redirect_tqdm as redirect

    root = logging.getLogger()
    console = [
        h
        for h in root.handlers
        if type(h) is logging.StreamHandler and h.stream in (sys.stdout, sys.stderr)
    ]
    level = min((h.level for h in console), default=logging.NOTSET)
    with redirect():
        for h in root.handlers:
            if h not in console and not isinstance(h, logging.FileHandler):
                h.setLevel(level)
        yield


log = logging.getLogger("amtprep")


def _add(parser: argparse.ArgumentParser, name: str, **kw) -> None:
    names = [f"--{name}"]
    if "_" in name:
        names.append(f"--{name.replace('_', '-')}")
    parser.add_argument(*names, dest=name, **kw)


def _positive_int(v: str) -> int:
    n = int(v)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return n


def _stages(v: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in v.split(",") if p.strip())
    bad = [p for p in parts if p not in STAGES]
    if bad or not parts:
        raise argparse.ArgumentTypeError(f"unknown stage(s) {bad}; choose from {','.join(STAGES)}")
    return parts


def _path_or_url(text: str) -> Path | str:
    """A local path, or a URL kept as text (``Path`` would fold ``s3://`` into ``s3:/``)."""
    from amtprep.io.storage import is_url

    return text if is_url(text) else Path(text)


def resolve_remote_output(args: argparse.Namespace) -> None:
    """With a URL ``--output_dir``: ``args.remote`` is the URL and ``args.output_dir`` the local
    working copy every local step uses."""
    from amtprep.io.storage import is_url

    args.remote = None
    if is_url(str(args.output_dir)):
        from amtprep.commit.remote import default_work_dir

        args.remote = str(args.output_dir).rstrip("/")
        args.output_dir = args.work_dir or default_work_dir(
            args.remote, args.cache_dir or default_cache_dir()
        )


def build_parser(prog: str = "amtprep") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Preprocess paired MIDI + caption data into merged Parquet shards, resumably.",
    )
    g = p.add_argument_group("input and output")
    _add(
        g,
        "input_file",
        type=_path_or_url,
        help="paired file: .json, .jsonl, .csv or .parquet (a path or an s3:// URL)",
    )
    _add(
        g,
        "output_dir",
        type=_path_or_url,
        default=Path("data/processed"),
        help="a folder or an s3:// URL (README: On a bucket) (default: data/processed)",
    )
    _add(
        g,
        "work_dir",
        type=Path,
        help="with an s3:// --output_dir: the local working copy (default: under --cache_dir)",
    )
    _add(g, "midi_column", help="column with MIDI paths (default: location, midi_path or midi)")
    _add(g, "text_column", help="column with captions (default: caption or text)")
    _add(g, "id_column", help="column with record ids (default: id if present)")
    _add(
        g,
        "midi_root",
        type=_path_or_url,
        help="base folder of relative MIDI paths, or a .zip/.tar/.tar.gz/.tgz archive holding "
        "them (read in place; docs/sources.md) (default: the input file's folder)",
    )
    _add(
        g,
        "midi_bytes_column",
        help="Parquet binary column holding the MIDI bytes themselves (GigaMIDI: music); ids "
        "default to the md5 column, checked against the bytes",
    )
    _add(
        g,
        "keep_midi_bytes",
        action="store_true",
        help="carry the --midi_bytes_column bytes into the final rows (default: left out)",
    )
    _add(g, "midi_checkpoint", type=Path, help="default: <output_dir>/midi_checkpoint.json")
    _add(g, "text_checkpoint", type=Path, help="default: <output_dir>/text_checkpoint.json")
    _add(
        g,
        "rows_per_shard",
        type=_positive_int,
        default=ROWS_PER_FINAL_SHARD,
        help=f"rows per final Parquet file (default {ROWS_PER_FINAL_SHARD})",
    )
    _add(
        g,
        "tags",
        choices=["none", "midicaps"],
        default="none",
        help="tag columns added at merge: midicaps = MidiCaps' key, time_signature, tempo, "
        "tempo_word, duration, duration_word, instrument_summary, instrument_numbers_sorted "
        "(docs/tags.md); changing it only republishes",
    )
    _add(
        g,
        "dedup",
        choices=["mark", "drop"],
        default="mark",
        help="duplicates (same bytes or same notes, docs/dedup.md): mark = duplicate_of / "
        "duplicate_kind columns (default); drop = later rows of each group go to "
        "duplicates.parquet instead of the data; changing it only republishes",
    )
    _add(
        g,
        "relocate_midi_root",
        action="store_true",
        help="accept a --midi_root other than the one committed shards were made with, after "
        "checking a sample of content hashes under it (recorded in the commit log)",
    )

    g = p.add_argument_group("run control")
    _add(
        g,
        "mode",
        choices=MODES,
        default="process",
        help="process (resumes if it can) or continue (requires a checkpoint)",
    )
    _add(
        g,
        "stages",
        type=_stages,
        default=STAGES,
        help="comma list of midi,text,merge (default: all)",
    )
    _add(
        g,
        "batch_size",
        type=_positive_int,
        default=None,
        help="records per batch and shard (default 256)",
    )
    _add(
        g,
        "text_batch_size",
        type=_positive_int,
        default=None,
        help="the text stage's records per batch and shard (default: --batch_size; 4096 when "
        "the text model runs on a GPU and --batch_size is not given)",
    )
    _add(
        g,
        "checkpoint_interval",
        type=_positive_int,
        default=1,
        help="batches between checkpoint saves",
    )
    _add(
        g,
        "force_restart",
        action="store_true",
        help="discard checkpoints and shards (not the cache)",
    )
    _add(
        g,
        "save_partial",
        action="store_true",
        help="write <output_dir>/partial/ with what is done when the run stops",
    )
    _add(
        g,
        "save_partial_every",
        type=_positive_int,
        default=None,
        metavar="N",
        help="while running, refresh <output_dir>/partial/ every N committed batches (each "
        "refresh merges what is committed; also see `amtprep partial`)",
    )
    _add(g, "retry_failed", action="store_true", help="re-run records that failed before")
    _add(
        g,
        "overlap_stages",
        action="store_true",
        help="run the MIDI and text stages at the same time (each commits its own shards; on "
        "CPU the text model gets the cores the MIDI workers leave)",
    )
    _add(g, "use_cache", action="store_true", help="reuse results cached by content (diskcache)")
    _add(g, "cache_dir", type=Path, default=None, help=f"default: {default_cache_dir()}")
    _add(
        g,
        "log_level",
        type=str.lower,
        default="info",
        choices=["debug", "info", "warning", "error"],
    )
    _add(g, "no_progress", action="store_true", help="no progress bar (log a line per batch)")

    g = p.add_argument_group("housekeeping (these act on --output_dir and exit)")
    _add(
        g,
        "show_progress",
        action="store_true",
        help="print per-stage progress (safe while a run is going)",
    )
    _add(
        g,
        "list_checkpoints",
        action="store_true",
        help="list checkpoints and backups with time and position",
    )
    _add(
        g,
        "reset_progress",
        nargs="?",
        const="all",
        choices=["all", "midi", "text"],
        help="remove the checkpoint and shards of one stage (or all) and what was merged from them",
    )

    g = p.add_argument_group("MIDI stage")
    _add(g, "workers", type=_positive_int, default=1, help="MIDI worker processes")
    _add(
        g,
        "executor",
        choices=("local", "ray"),
        default="local",
        help="where batches run: this machine, or a Ray cluster (README: On a Ray cluster)",
    )
    _add(g, "ray_address", help="--executor ray: a running cluster (default: start a local Ray)")
    _add(
        g,
        "ray_text_actors",
        type=_positive_int,
        default=1,
        help="--executor ray: text model actors (default 1)",
    )
    _add(
        g,
        "ray_gpus_per_actor",
        type=float,
        default=None,
        help="--executor ray: GPUs per text actor, fractional packs several on one GPU "
        "(default: 1 with --use_gpu, else 0)",
    )
    _add(g, "midi_backend", choices=["auto", "mido", "symusic"], default="auto")
    _add(g, "max_midi_bytes", type=_positive_int, default=64 * 1024 * 1024)
    _add(g, "file_timeout", type=float, default=60.0, help="seconds allowed to parse one MIDI file")
    _add(
        g,
        "tokenizer",
        help="store miditok token ids: remi, tsd, midilike, structured, cpword, octuple, mumidi, "
        "mmm (miditok's default config; needs amtprep[tokens])",
    )
    _add(g, "tokenizer_preset", choices=["text2midi"], help="text2midi's exact REMI tokens")
    _add(
        g,
        "tokenizer_config",
        type=Path,
        help="a miditok TokenizerConfig JSON (class from --tokenizer, default REMI) or a saved "
        "tokenizer JSON",
    )
    _add(
        g,
        "max_midi_tokens",
        type=_positive_int,
        default=None,
        help="keep the first N tokens (default: all; text2midi preset: 2048)",
    )
    _add(
        g,
        "tokens_bos_eos",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="wrap each token sequence in BOS ... EOS (default: on for the text2midi preset only)",
    )

    g = p.add_argument_group("text stage")
    g.add_argument(
        "--text_model",
        "--text-model",
        "--model",
        dest="text_model",
        help="Hugging Face id or local folder, BERT-style or T5-family (only the encoder is "
        "loaded); default: packaged all-MiniLM-L6-v2",
    )
    _add(
        g,
        "use_gpu",
        action="store_true",
        help="use CUDA when available (fp16/bf16, larger batches); without one, say why and "
        "run on CPU",
    )
    _add(
        g,
        "require_gpu",
        action="store_true",
        help="like --use_gpu, but refuse to run the text stage when no CUDA device is available",
    )
    _add(g, "dtype", choices=["auto", "fp32", "fp16", "bf16"], default="auto")
    _add(
        g,
        "pooling",
        choices=["mean", "cls", "none"],
        default="mean",
        help="mean (masked), cls (BERT-style [CLS]; refused for T5), none (per-token float16 "
        "states, for cross-attention)",
    )
    _add(g, "normalize", action=argparse.BooleanOptionalAction, default=None)
    _add(g, "max_length", type=_positive_int, default=None, help="default: the model's own limit")
    _add(g, "embedding_dtype", choices=["float32", "float16"], default="float32")
    _add(
        g,
        "model_batch_size",
        type=_positive_int,
        default=None,
        help="captions per model batch at most (default: 256 on CPU, 2048 on a GPU)",
    )
    _add(
        g,
        "max_tokens_per_batch",
        type=_positive_int,
        default=None,
        help="padded tokens per model batch at most (default on CPU: 2048 at fp32, 4096 at bf16; "
        "65536 on a GPU)",
    )
    _add(
        g,
        "max_caption_chars",
        type=_positive_int,
        default=TextConfig.max_caption_chars,
        help="longer captions become caption_too_long failures "
        f"(default {TextConfig.max_caption_chars})",
    )
    return p


def config_from_args(args: argparse.Namespace) -> RunConfig:
    if args.input_file is None:
        raise ConfigError(
            "--input_file is required (a .json, .jsonl, .csv or .parquet paired file)"
        )
    cache_dir = args.cache_dir or default_cache_dir()
    if not (args.tokenizer or args.tokenizer_preset or args.tokenizer_config) and (
        args.max_midi_tokens is not None or args.tokens_bos_eos is not None
    ):
        raise ConfigError(
            "--max_midi_tokens and --tokens_bos_eos need --tokenizer, --tokenizer_preset or "
            "--tokenizer_config"
        )
    midi = MidiConfig(
        backend=args.midi_backend,
        workers=args.workers,
        max_midi_bytes=args.max_midi_bytes,
        file_timeout=args.file_timeout,
        use_cache=args.use_cache,
        cache_dir=cache_dir,
        tokens=TokenConfig(
            tokenizer=args.tokenizer,
            preset=args.tokenizer_preset,
            config_file=args.tokenizer_config,
            max_tokens=args.max_midi_tokens,
            bos_eos=args.tokens_bos_eos,
        ),
    )
    text = TextConfig(
        model=args.text_model,
        pooling=args.pooling,
        normalize=args.normalize,
        max_length=args.max_length,
        dtype=args.dtype,
        embedding_dtype=args.embedding_dtype,
        use_gpu=args.use_gpu or args.require_gpu,
        require_gpu=args.require_gpu,
        model_batch_size=args.model_batch_size,
        max_tokens_per_batch=args.max_tokens_per_batch,
        max_caption_chars=args.max_caption_chars,
        use_cache=args.use_cache,
        cache_dir=cache_dir,
    )
    return RunConfig(
        input_file=args.input_file,
        output_dir=args.output_dir,
        remote=getattr(args, "remote", None),
        executor=args.executor,
        ray_address=args.ray_address,
        ray_text_actors=args.ray_text_actors,
        ray_gpus_per_actor=(
            args.ray_gpus_per_actor
            if args.ray_gpus_per_actor is not None
            else (1.0 if args.use_gpu or args.require_gpu else 0.0)
        ),
        mode=args.mode,
        stages=args.stages,
        batch_size=args.batch_size or 256,
        text_batch_size=args.text_batch_size,
        batch_size_given=args.batch_size is not None,
        checkpoint_interval=args.checkpoint_interval,
        force_restart=args.force_restart,
        save_partial=args.save_partial,
        save_partial_every=args.save_partial_every,
        overlap_stages=args.overlap_stages,
        retry_failed=args.retry_failed,
        midi_checkpoint=args.midi_checkpoint,
        text_checkpoint=args.text_checkpoint,
        midi_column=args.midi_column,
        text_column=args.text_column,
        id_column=args.id_column,
        midi_root=args.midi_root,
        relocate_midi_root=args.relocate_midi_root,
        midi_bytes_column=args.midi_bytes_column,
        keep_midi_bytes=args.keep_midi_bytes,
        rows_per_final_shard=args.rows_per_shard,
        tags=() if args.tags == "none" else (args.tags,),
        dedup=args.dedup,
        log_level=args.log_level,
        progress=not args.no_progress,
        midi=midi,
        text=text,
    )


def setup_logging(level: str, output_dir: Path | None) -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if level == "debug" else logging.INFO)
    for h in list(root.handlers):
        root.removeHandler(h)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(getattr(logging, level.upper()))
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root.addHandler(console)
    if output_dir is not None:
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            fh = logging.FileHandler(output_dir / "amtprep.log")
            fh.setLevel(logging.DEBUG if level == "debug" else logging.INFO)
            fh.setFormatter(
                logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
            )
            root.addHandler(fh)
        except OSError:
            pass  # an unwritable output dir is reported by the pipeline with a fix
    # transformers draws its own weight-loading bar; ours are the ones the operator needs
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for noisy in (
        "transformers", "urllib3", "filelock", "huggingface_hub", "botocore", "aiobotocore",
        "s3fs",
    ):  # fmt: skip
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(
    argv: Sequence[str] | None = None, *, prog: str = "amtprep", default_mode: str | None = None
) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(prog)
    if default_mode is not None:
        parser.set_defaults(mode=default_mode)
    if argv and argv[0] == "partial" and prog == "amtprep":
        from amtprep.snapshot import partial_main

        setup_logging("warning", None)
        return partial_main(argv[1:])
    if argv and argv[0] == "status" and prog == "amtprep":
        try:
            return status_main(argv[1:])
        except BrokenPipeError:  # `amtprep status D | head`: the reader left, nothing is wrong
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    args = parser.parse_args(argv)
    _check_usage(parser, args)
    debug = args.log_level == "debug"
    if args.show_progress or args.list_checkpoints or args.reset_progress:
        if "://" in str(args.output_dir):
            if not args.show_progress:
                parser.error("--list_checkpoints and --reset_progress need a local --output_dir")
            try:
                return _remote_progress(args)
            except Exception as exc:  # no credentials, no such bucket: say so, no traceback
                print(f"{prog}: cannot read {args.output_dir}: {exc}", file=sys.stderr)
                return 4
        return _housekeeping(args)
    resolve_remote_output(args)
    setup_logging(args.log_level, args.output_dir)
    try:
        cfg = config_from_args(args)
        if args.require_gpu and "text" in args.stages:  # refuse before any stage does work
            from amtprep.text.device import require_cuda

            require_cuda()
        from amtprep.pipeline import run

        with logging_redirect_tqdm():
            summary = run(cfg)
    except Interrupted as exc:
        _print_progress(args)
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(
            f"{prog}: interrupted; committed batches are kept, resume with --mode continue",
            file=sys.stderr,
        )
        return 130
    except AmtprepError as exc:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # last resort: one line for the operator, the traceback in debug
        if debug:
            traceback.print_exc()
        print(
            f"{prog}: unexpected error: {type(exc).__name__}: {exc} (rerun with --log_level debug for details)",
            file=sys.stderr,
        )
        return 1
    _print_summary(summary)
    return 0


_REPORT_ONLY = {
    "show_progress": ("only reports the progress in --output_dir", "see progress"),
    "list_checkpoints": ("only lists the checkpoints in --output_dir", "list them"),
    "reset_progress": ("only removes progress from --output_dir", "reset"),
}


def _check_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exits 2 (argparse's usage error) for combinations that would quietly not do what was asked:
    a housekeeping flag beside --input_file runs nothing, and a run needs --input_file."""
    given = [name for name in _REPORT_ONLY if getattr(args, name)]
    if given and args.input_file is not None:
        flag = given[0]
        does, verb = _REPORT_ONLY[flag]
        parser.error(
            f"--{flag} {does} and runs nothing; drop --input_file to {verb}, "
            f"or drop --{flag} to run"
        )
    if not given and args.input_file is None:
        parser.error(
            "--input_file is required to run (a .json, .jsonl, .csv or .parquet paired file); "
            "--show_progress reports on --output_dir without one"
        )
    if args.keep_midi_bytes and not args.midi_bytes_column:
        parser.error("--keep_midi_bytes keeps the --midi_bytes_column bytes; name that column too")


def _print_summary(summary) -> None:
    for name, res in summary.results.items():
        log.info(
            "%s stage: %d processed this run (%d failed) in %.1f s",
            name,
            res.processed,
            res.failed,
            res.seconds,
        )
    if summary.final_dir is not None and summary.statistics:
        s = summary.statistics
        log.info(
            "done: %d rows in %s, %d failed records (see failures.parquet), wall time %.1f s",
            s["final_rows"],
            summary.final_url or summary.final_dir,
            s["failed_records"],
            summary.wall_time,
        )


def _print_progress(args: argparse.Namespace) -> None:
    from amtprep.status import format_status, stage_status

    paths = _checkpoint_paths(args)
    statuses = [stage_status(s, paths[s], args.output_dir / s) for s in ("midi", "text")]
    print(format_status(args.output_dir, statuses), file=sys.stderr)


def _remote_progress(args: argparse.Namespace) -> int:
    """--show_progress on a bucket: the stages' summaries as the bucket holds them (each is
    rewritten there with every checkpoint save)."""
    import tempfile

    from amtprep.io.storage import open_storage
    from amtprep.status import format_status, stage_status

    url = str(args.output_dir).rstrip("/")
    storage = open_storage(url)
    with tempfile.TemporaryDirectory() as tmp:
        statuses = []
        for stage in ("midi", "text"):
            local = Path(tmp) / f"{stage}_checkpoint.json"
            try:
                storage.download(f"{stage}_checkpoint.json", local)
            except FileNotFoundError:
                pass
            statuses.append(stage_status(stage, local, Path(tmp) / stage))
    from amtprep.commit.remote import read_pointer
    from amtprep.io.lease import Lease

    holder = Lease(storage).current_holder()
    text = format_status(url, statuses, holder=holder)
    pointer, _ = read_pointer(storage, "final")
    if pointer:
        text += f"\n  final dataset:  {pointer['data']} (releases/final.json)"
    print(text, file=sys.stderr)
    return 0


def _checkpoint_paths(args: argparse.Namespace) -> dict[str, Path]:
    out = args.output_dir
    return {
        "midi": args.midi_checkpoint or out / "midi_checkpoint.json",
        "text": args.text_checkpoint or out / "text_checkpoint.json",
    }


def _housekeeping(args: argparse.Namespace) -> int:
    from amtprep.status import format_status, stage_status

    out: Path = args.output_dir
    paths = _checkpoint_paths(args)
    if args.reset_progress:
        from amtprep.io.lock import OutputLock
        from amtprep.pipeline import reset_outputs

        if not out.is_dir():
            print(f"nothing to reset: {out} does not exist")
            return 0
        cfg = RunConfig(
            input_file=Path("-"),
            output_dir=out,
            midi_checkpoint=args.midi_checkpoint,
            text_checkpoint=args.text_checkpoint,
        )
        stages = ("midi", "text") if args.reset_progress == "all" else (args.reset_progress,)
        try:
            with OutputLock(out):
                removed = reset_outputs(cfg, stages)
        except AmtprepError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
        for p in removed:
            print(f"removed {p}")
        if not removed:
            print(f"nothing to remove for {', '.join(stages)} in {out}")
        return 0
    if args.list_checkpoints:
        import json
        import time

        found = False
        for stage, ck in paths.items():
            for p in (ck, ck.with_name(ck.name + ".bak")):
                if not p.exists():
                    continue
                found = True
                try:
                    body = json.loads(p.read_text())
                    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(body["timestamp"]))
                    pos = f"last_processed_idx={body['last_processed_idx']} processed={body['processed']}/{body['total_files']}"
                except (OSError, ValueError, KeyError) as exc:
                    when, pos = "-", f"unreadable ({type(exc).__name__})"
                print(f"{stage:5} {p}  {when}  {pos}")
        if not found:
            print(f"no checkpoints in {out}")
        return 0
    print(format_status(out, [stage_status(s, paths[s], out / s) for s in ("midi", "text")]))
    return 0


def status_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="amtprep status", description="Progress of a run (read-only).")
    p.add_argument("output_dir", type=Path)
    p.add_argument("--midi_checkpoint", "--midi-checkpoint", type=Path)
    p.add_argument("--text_checkpoint", "--text-checkpoint", type=Path)
    args = p.parse_args(argv)
    args.show_progress, args.list_checkpoints, args.reset_progress = True, False, None
    return _housekeeping(args)
