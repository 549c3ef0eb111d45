"""Text stage throughput against the usual ways of embedding captions, in one run, same captions.

    python bench/text_stage.py [--n 300] [--repeats 3] [--methods ...]
    python bench/text_stage.py --whole_process [--n 1020] [--repeats 3]

Methods: ``hf_one_at_a_time`` (AutoModel per caption), ``hf_batched`` (32, unsorted, padded to
longest), ``sentence_transformers`` (``encode``, batch 32), ``stage_fp32`` (oneDNN linears),
``stage_fp32_torch_linears`` (the ``F.linear`` fallback, ``AMTPREP_LINEAR=torch``) and ``stage_bf16``
(TextStage.process on runner batches of ``--runner_batch`` records). Each method runs in a fresh
process (so peak RSS is its own) kept alive for the whole run, warms up on one batch, then the
methods take turns for ``--repeats`` timed passes over all captions (best pass reported, median
beside it). Prints one JSON object: captions/s, ratio to
sentence-transformers, max abs diff and min cosine of its vectors to sentence-transformers', peak RSS.

``--whole_process``: each of ``sentence_transformers``, ``stage_fp32``, ``stage_bf16`` and
``stage_bf16_transformers_loader`` (the model loaded through transformers,
``AMTPREP_MODEL_LOADER=transformers``, instead of ``amtprep.text.light``) runs as a
fresh ``python`` process that imports, loads the model (start-up probes included), embeds every
caption of a held-out corpus once and exits; the wall time of the whole process is what counts
(round-robin, best of ``--repeats``). The held-out corpus (``make_heldout_captions``) is written
from other templates and vocabulary than the tuning corpus, 8 to 120 words long.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METHODS = (
    "hf_one_at_a_time",
    "hf_batched",
    "sentence_transformers",
    "stage_fp32_torch_linears",
    "stage_fp32",
    "stage_bf16",
)
BASELINE = "sentence_transformers"

GENRES = [
    "pop",
    "rock",
    "electronic",
    "classical",
    "jazz",
    "ambient",
    "folk",
    "hip hop",
    "cinematic",
    "funk",
    "metal",
    "country",
    "reggae",
    "blues",
    "new age",
    "soundtrack",
]
INSTRUMENTS = [
    "piano",
    "acoustic guitar",
    "electric guitar",
    "string ensemble",
    "synth pad",
    "drums",
    "electric bass",
    "violin",
    "cello",
    "flute",
    "alto saxophone",
    "trumpet",
    "French horn",
    "harp",
    "organ",
    "choir",
    "synth lead",
    "marimba",
    "timpani",
    "clarinet",
]
MOODS = [
    "melancholic",
    "uplifting",
    "dark",
    "energetic",
    "relaxing",
    "dramatic",
    "playful",
    "romantic",
    "epic",
    "dreamy",
    "tense",
    "happy",
    "nostalgic",
    "mysterious",
]
KEYS = [
    "C major",
    "A minor",
    "G major",
    "E minor",
    "D major",
    "B minor",
    "F major",
    "D minor",
    "Bb major",
    "F# minor",
    "Eb major",
    "C# minor",
]
TEMPOS = [
    "a slow Adagio tempo",
    "a moderate Andante tempo",
    "a fast Allegro tempo",
    "a lively Presto tempo",
    "a steady Moderato tempo",
]
CHORDS = ["C, G, Am, F", "Am, F, C, G", "Dm, G, C", "E, B, C#m, A", "F, C, Dm, Bb", "Gm, Eb, Bb, F"]
TAILS = [
    "The bass line stays simple while the melody develops over several phrases.",
    "A short drum fill leads into each new section, and the arrangement thickens towards the end.",
    "It would suit a film scene, a video game menu or a quiet evening at home.",
    "Dynamics rise and fall gently, with a brief pause before the final chorus returns.",
    "Occasional syncopation gives the rhythm a relaxed swing feel without losing its drive.",
]


def make_captions(n: int, seed: int = 0) -> list[str]:
    """Varied MidiCaps-like captions of 40-60 words."""
    rng = random.Random(seed)
    captions = []
    while len(captions) < n:
        instruments = rng.sample(INSTRUMENTS, rng.randint(2, 5))
        mood = rng.choice(MOODS)
        article = "An" if mood[0] in "aeiou" else "A"
        text = (
            f"{article} {mood} {rng.choice(GENRES)} song featuring "
            f"{', '.join(instruments[:-1])} and {instruments[-1]}. It is in {rng.choice(KEYS)} "
            f"with a {rng.choice(['4/4', '3/4', '6/8', '2/4'])} time signature at "
            f"{rng.choice(TEMPOS)} of {rng.randint(60, 180)} BPM, and the mood is "
            f"{rng.choice(MOODS)} and {rng.choice(MOODS)}. The chord progression "
            f"{rng.choice(CHORDS)} repeats throughout."
        )
        target = rng.randint(40, 60)
        for tail in rng.sample(TAILS, len(TAILS)):
            if len(text.split()) + len(tail.split()) <= target:
                text = f"{text} {tail}"
        if 40 <= len(text.split()) <= 60:
            captions.append(text)
    return captions


HELDOUT_OPENINGS = [
    "This {mood} {genre} piece opens with {inst} alone",
    "Performed mostly on {inst}, the track is {mood}",
    "{genre_cap} groove built around {inst}",
    "A short {genre} sketch for {inst}",
    "Over a {meter} pulse, {inst} carry a {mood} theme",
]
HELDOUT_MIDDLES = [
    "before the rest of the band joins at bar {bar}",
    "and the harmony moves between {key} and its relative key",
    "while the tempo hovers around {bpm} beats per minute",
    "with call-and-response phrases between the high and low registers",
    "and a counter-melody appears in the second half",
    "then breaks down to a sparse bridge of sustained chords",
]
HELDOUT_ENDINGS = [
    "It ends on an unresolved chord.",
    "The last section repeats the opening motif an octave higher.",
    "Expect a fade-out over the final eight bars.",
    "Good background music for studying.",
    "",
]


def make_heldout_captions(n: int, seed: int = 1) -> list[str]:
    """Captions of another style than ``make_captions``: other templates, 8-120 words."""
    rng = random.Random(seed)
    captions = []
    while len(captions) < n:
        fields = {
            "mood": rng.choice(MOODS),
            "genre": rng.choice(GENRES),
            "genre_cap": rng.choice(GENRES).capitalize(),
            "inst": " and ".join(rng.sample(INSTRUMENTS, rng.randint(1, 3))),
            "meter": rng.choice(["steady 4/4", "lilting 3/4", "rolling 6/8", "odd 7/8"]),
            "key": rng.choice(KEYS),
            "bpm": rng.randint(50, 200),
            "bar": rng.choice([5, 9, 17, 33]),
        }
        parts = [rng.choice(HELDOUT_OPENINGS).format(**fields)]
        for middle in rng.sample(HELDOUT_MIDDLES, rng.randint(0, len(HELDOUT_MIDDLES))):
            parts.append(middle.format(**fields))
        text = ", ".join(parts) + ". " + rng.choice(HELDOUT_ENDINGS)
        if rng.random() < 0.15:  # some long, rambling descriptions
            text = " ".join([text] * rng.randint(2, 3))
        words = len(text.split())
        if 8 <= words <= 120:
            captions.append(text.strip())
    return captions


def _hf_encode(captions: list[str], batch_size: int, model, tokenizer) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(captions), batch_size):
            enc = tokenizer(
                captions[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="pt",
            )
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=1).numpy())
    return np.concatenate(out)


def _make_encoder(method: str, runner_batch: int):
    """Return ``encode(captions) -> [N, D] float32`` for ``method``, fully loaded."""
    from amtprep.text.model import default_model_dir

    model_dir = str(default_model_dir())
    if method.startswith("hf_"):
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
        batch_size = 1 if method == "hf_one_at_a_time" else 32
        return lambda caps: _hf_encode(caps, batch_size, model, tokenizer)
    if method == "sentence_transformers":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(model_dir, device="cpu")
        return lambda caps: model.encode(caps, batch_size=32, show_progress_bar=False)
    from amtprep.config import TextConfig
    from amtprep.records import Record
    from amtprep.text import TextStage

    if method == "stage_fp32_torch_linears":  # the fallback route, F.linear (issue 14)
        os.environ["AMTPREP_LINEAR"] = "torch"
    if method.endswith("_transformers_loader"):  # the model loaded through transformers
        os.environ["AMTPREP_MODEL_LOADER"] = "transformers"
    stage = TextStage(TextConfig(dtype="bf16" if method.startswith("stage_bf16") else "fp32"))

    def encode(caps: list[str]) -> np.ndarray:
        records = [Record(i, str(i), "", "", c) for i, c in enumerate(caps)]
        tables = [
            stage.process(records[s : s + runner_batch])
            for s in range(0, len(records), runner_batch)
        ]
        flat = [t.column("embedding").combine_chunks().flatten().to_numpy() for t in tables]
        return np.concatenate(flat).reshape(len(caps), -1)

    return encode


_ENCODER = None


def load_method(method: str, runner_batch: int, warmup: list[str]) -> None:
    """In the method's own worker process: load the model and warm it up."""
    global _ENCODER
    _ENCODER = _make_encoder(method, runner_batch)
    _ENCODER(warmup)  # first-call allocations and kernel selection


def time_pass(captions: list[str]) -> tuple[float, np.ndarray, float, int]:
    """One timed pass: (seconds, vectors, peak RSS MB of this worker, torch threads)."""
    import torch

    started = time.perf_counter()
    vectors = _ENCODER(captions)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return seconds, np.asarray(vectors, dtype=np.float32), peak_mb, torch.get_num_threads()


def agreement(vectors: np.ndarray, reference: np.ndarray) -> dict:
    """Max abs diff and min cosine of ``vectors`` to ``reference``, row by row."""
    cosine = (vectors * reference).sum(1) / (
        np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1)
    )
    return {
        "max_abs_diff_vs_st": float(np.abs(vectors - reference).max()),
        "min_cosine_vs_st": round(float(cosine.min()), 6),
    }


WHOLE_PROCESS_METHODS = (
    "sentence_transformers",
    "stage_fp32",
    "stage_bf16",
    "stage_bf16_transformers_loader",
)


def _one_process(method: str, n: int, out: str) -> None:
    """The body of one whole-process run: load, embed the held-out corpus once, save."""
    captions = make_heldout_captions(n)
    encode = _make_encoder(method, 256)
    np.save(out, np.asarray(encode(captions), dtype=np.float32))


def whole_process(n: int, repeats: int) -> dict:
    """Fresh processes per method, wall time from spawn to exit, round-robin, best of repeats."""
    import subprocess
    import tempfile

    times: dict[str, list[float]] = {m: [] for m in WHOLE_PROCESS_METHODS}
    vectors: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            for method in WHOLE_PROCESS_METHODS:
                out = os.path.join(tmp, f"{method}.npy")
                time.sleep(1.0)
                started = time.perf_counter()
                subprocess.run(
                    [sys.executable, __file__, "--_one", method, "--n", str(n), "--_out", out],
                    check=True,
                )
                times[method].append(time.perf_counter() - started)
                vectors[method] = np.load(out)
    reference = vectors[BASELINE]
    best_base = min(times[BASELINE])
    results = {}
    for method in WHOLE_PROCESS_METHODS:
        results[method] = {
            "seconds_best": round(min(times[method]), 2),
            "seconds_all": [round(t, 2) for t in times[method]],
            "ratio_to_sentence_transformers": round(best_base / min(times[method]), 2),
            **agreement(vectors[method], reference),
        }
    words = [len(c.split()) for c in make_heldout_captions(n)]
    return {
        "mode": "whole_process",
        "corpus": "held-out (make_heldout_captions)",
        "captions": n,
        "words_per_caption": [min(words), max(words)],
        "repeats": repeats,
        "cores": len(os.sched_getaffinity(0)),
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--whole_process", action="store_true")
    parser.add_argument("--_one", choices=WHOLE_PROCESS_METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--_out", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--runner_batch",
        type=int,
        default=256,
        help="records per process() call (the runner's default --batch_size)",
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = parser.parse_args()
    if args._one:
        _one_process(args._one, args.n, args._out)
        return
    if args.whole_process:
        print(json.dumps(whole_process(args.n, args.repeats), indent=2))
        return
    captions = make_captions(args.n)
    methods = list(dict.fromkeys([BASELINE, *args.methods]))
    spawn = multiprocessing.get_context("spawn")
    workers = {m: ProcessPoolExecutor(max_workers=1, mp_context=spawn) for m in methods}
    try:
        for method, worker in workers.items():
            worker.submit(load_method, method, args.runner_batch, captions[:32]).result()
        # Round-robin passes so background load on a shared machine hits every method alike.
        passes: dict[str, list] = {m: [] for m in methods}
        for _ in range(args.repeats):
            for method, worker in workers.items():
                # Let the previous worker's OpenMP threads stop spin-waiting on the 2 cores.
                time.sleep(1.0)
                passes[method].append(worker.submit(time_pass, captions).result())
    finally:
        for worker in workers.values():
            worker.shutdown()
    results = {}
    for method, runs in passes.items():
        best = min(seconds for seconds, *_ in runs)
        results[method] = {
            "captions_per_s": round(len(captions) / best, 1),
            "seconds_best": round(best, 3),
            "seconds_median": round(float(np.median([r[0] for r in runs])), 3),
            "peak_rss_mb": round(max(r[2] for r in runs), 1),
            "torch_threads": runs[0][3],
            "vectors": runs[-1][1],
        }
    reference = results[BASELINE]["vectors"]
    base_rate = results[BASELINE]["captions_per_s"]
    for figures in results.values():
        vectors = figures.pop("vectors")
        figures["ratio_to_sentence_transformers"] = round(figures["captions_per_s"] / base_rate, 2)
        figures.update(agreement(vectors, reference))
    words = [len(c.split()) for c in captions]
    report = {
        "captions": len(captions),
        "words_per_caption": [min(words), max(words)],
        "repeats": args.repeats,
        "runner_batch": args.runner_batch,
        "cores": len(os.sched_getaffinity(0)),
        "cpu": platform.processor() or platform.machine(),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS", "OMP", "MKL"))},
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
