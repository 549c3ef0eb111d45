"""MIDI tokens through miditok: ids equal miditok's own, the text2midi preset, the layouts,
failures, the cache, files beside the final data, and a refused resume under another miditok."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

miditok = pytest.importorskip("miditok")
import symusic  # noqa: E402

from amtprep.cli import main  # noqa: E402
from amtprep.config import MidiConfig, TokenConfig  # noqa: E402
from amtprep.errors import ConfigError  # noqa: E402
from amtprep.midi import MidiStage  # noqa: E402
from amtprep.midi.tokenizer import (  # noqa: E402
    TEXT2MIDI,
    TEXT2MIDI_VOCAB_SHA256,
    MidiTokenizer,
    vocab_sha256,
)
from tests.helpers import REPO, run_args, run_cli  # noqa: E402
from tests.midi.conftest import meta, midi_bytes, note, raw_midi, records_for  # noqa: E402
from tests.midi.midigen import generate_midi  # noqa: E402

SEEDS = range(8)
# a file whose own bytes hold a one-byte "\x00" marker, like the ones the symusic backend adds
OWN_MARKER = midi_bytes(
    [meta("marker", text="\x00"), note(60), note(62, 90, 240), note(60, 0, 240)]
)


def token_corpus(tmp_path: Path) -> list:
    files = {f"{s}.mid": generate_midi(s) for s in SEEDS}
    files["marker.mid"] = OWN_MARKER
    return records_for(tmp_path, files)


def miditok_ids(tok, path: str) -> list[int]:
    """miditok's own ids for a file, flattened the way the ``tokens`` column documents."""
    out = tok(symusic.Score.from_file(path))
    seqs = out if isinstance(out, list) else [out]
    if not tok.is_multi_voc:
        return [int(i) for s in seqs for i in s.ids]
    width = len(tok.vocab)  # each token's ids, padded with -1 to one per vocabulary
    return [int(i) for s in seqs for t in s.ids for i in [*t, *[-1] * (width - len(t))]]


def stage_rows(tmp_path, records, tokens: TokenConfig, **kw) -> tuple[list[dict], MidiStage]:
    kw = {"file_timeout": 60.0, **kw}
    cfg = MidiConfig(cache_dir=tmp_path / "cache", tokens=tokens, **kw)
    with MidiStage(cfg) as stage:
        table = stage.process(records)
    assert table.schema == stage.schema()
    return table.to_pylist(), stage


@pytest.mark.parametrize("workers", [1, 2])
def test_ids_equal_miditok_on_the_same_score(tmp_path, workers):
    records = token_corpus(tmp_path)
    tsd_config = tmp_path / "tsd.json"
    miditok.TokenizerConfig(use_programs=True, num_velocities=16).save_to_json(tsd_config)
    cases = [
        (TokenConfig(tokenizer="remi"), miditok.REMI(miditok.TokenizerConfig())),
        (
            TokenConfig(tokenizer="tsd", config_file=tsd_config),
            miditok.TSD(miditok.TokenizerConfig.load_from_json(tsd_config)),
        ),
    ]
    for tokens, reference in cases:
        for backend in ("auto", "mido"):  # mido: the Score is built once from the same bytes
            rows, stage = stage_rows(tmp_path, records, tokens, workers=workers, backend=backend)
            assert stage.tokenizer.tok.vocab == reference.vocab
            for record, row in zip(records, rows, strict=True):
                assert row["status"] == "ok", row["error"]
                expected = miditok_ids(reference, record.resolved_path)
                assert row["tokens"] == expected, (record.id, backend)
                assert row["n_tokens_midi"] == len(expected) and not row["tokens_truncated"]
                if reference.one_token_stream:
                    assert "token_track_lengths" not in row
                else:  # one sequence per track, concatenated; lengths split them back
                    out = reference(symusic.Score.from_file(record.resolved_path))
                    assert row["token_track_lengths"] == [len(s.ids) for s in out]


@pytest.mark.parametrize("name", ["cpword", "mumidi"])
def test_multi_vocabulary_ids_are_row_major(tmp_path, name):
    records = token_corpus(tmp_path)[:3]
    rows, stage = stage_rows(tmp_path, records, TokenConfig(tokenizer=name))
    reference = type(stage.tokenizer.tok)(miditok.TokenizerConfig())
    assert stage.tokenizer.width == len(reference.vocab) > 1
    for record, row in zip(records, rows, strict=True):
        assert row["status"] == "ok", row["error"]
        assert row["tokens"] == miditok_ids(reference, record.resolved_path)
        assert row["n_tokens_midi"] * stage.tokenizer.width == len(row["tokens"])


def test_text2midi_preset_vocabulary_bos_eos_and_cut(tmp_path):
    tok = MidiTokenizer.build(TokenConfig(preset="text2midi"))
    assert len(tok.tok) == 524 and len(tok.tok.vocab) == 524
    assert vocab_sha256(tok.tok.vocab) == TEXT2MIDI_VOCAB_SHA256
    assert (tok.max_tokens, tok.bos, tok.eos) == (2048, 1, 2)
    reference = miditok.REMI(miditok.TokenizerConfig(**TEXT2MIDI))  # text2midi's own build
    assert reference.vocab == tok.tok.vocab
    files = {"long.mid": generate_midi(5), "short.mid": midi_bytes([note(60), note(60, 0, 480)])}
    files["silent.mid"] = midi_bytes([meta("set_tempo", tempo=500_000)])
    records = records_for(tmp_path, files)
    rows, _ = stage_rows(tmp_path, records, TokenConfig(preset="text2midi", max_tokens=40))
    by_id = {r.midi_path: row for r, row in zip(records, rows, strict=True)}
    for name, row in by_id.items():
        ids = miditok_ids(reference, str(tmp_path / name))
        full = [1, *ids, 2]  # text2midi's loader: BOS + ids + EOS, then [0:2048]
        assert row["n_tokens_midi"] == len(full)
        assert row["tokens"] == full[:40]
        assert row["tokens_truncated"] == (len(full) > 40)
    assert by_id["long.mid"]["tokens_truncated"] and by_id["long.mid"]["tokens"][-1] != 2
    assert by_id["short.mid"]["tokens"][-1] == 2
    assert by_id["silent.mid"]["tokens"][0] == 1 and by_id["silent.mid"]["tokens"][-1] == 2


def test_a_file_miditok_cannot_tokenize_is_a_failed_row(tmp_path):
    # SMPTE division: mido parses it into features, symusic (and so miditok) cannot read it
    smpte = raw_midi(b"\x00\x90\x3c\x40\x87\x68\x80\x3c\x00\x00\xff\x2f\x00", division=0xE728)
    records = records_for(tmp_path, {"smpte.mid": smpte, "ok.mid": generate_midi(1)})
    rows, _ = stage_rows(tmp_path, records, TokenConfig(tokenizer="remi"))
    assert rows[0]["status"] == "failed" and rows[0]["error_type"] == "tokenize_failed"
    assert rows[0]["error"].startswith("REMI tokenizer: ") and rows[0]["tokens"] is None
    assert rows[1]["status"] == "ok" and rows[1]["tokens"]


def test_cache_gives_the_same_tokens_and_is_keyed_by_tokenizer(tmp_path):
    records = token_corpus(tmp_path)[:4]
    plain, _ = stage_rows(tmp_path, records, TokenConfig(tokenizer="remi"))
    tokens = TokenConfig(tokenizer="remi")
    first, stage = stage_rows(tmp_path, records, tokens, use_cache=True)
    assert stage.counters()["cache_misses"] == 4
    again, stage = stage_rows(tmp_path, records, tokens, use_cache=True)
    assert stage.counters()["cache_hits"] == 4
    assert (
        [r["tokens"] for r in again] == [r["tokens"] for r in first] == [r["tokens"] for r in plain]
    )
    _, stage = stage_rows(tmp_path, records, TokenConfig(tokenizer="tsd"), use_cache=True)
    assert stage.counters()["cache_hits"] == 0  # other tokens: other key
    _, stage = stage_rows(
        tmp_path, records, dataclasses.replace(tokens, max_tokens=10), use_cache=True
    )
    assert stage.counters()["cache_hits"] == 0


def test_settings_that_cannot_work_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown tokenizer 'nosuch'"):
        MidiTokenizer.build(TokenConfig(tokenizer="nosuch"))
    with pytest.raises(ConfigError, match="pass one of"):
        MidiTokenizer.build(TokenConfig(tokenizer="remi", preset="text2midi"))
    with pytest.raises(ConfigError, match="one sequence per track"):
        MidiTokenizer.build(TokenConfig(tokenizer="remi", bos_eos=True))
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="not a JSON object"):
        MidiTokenizer.build(TokenConfig(config_file=bad))


def test_saved_tokenizer_file_round_trips(tmp_path):
    saved = MidiTokenizer.build(TokenConfig(preset="text2midi"))
    path = tmp_path / "tokenizer.json"
    path.write_bytes(saved.artifacts()["tokenizer.json"])
    again = MidiTokenizer.build(TokenConfig(config_file=path, bos_eos=True, max_tokens=2048))
    assert again.tok.vocab == saved.tok.vocab and again.params_sha256 == saved.params_sha256


def test_missing_miditok_names_the_extra():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'miditok': raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from amtprep.config import TokenConfig\n"
        "from amtprep.errors import ConfigError\n"
        "from amtprep.midi.tokenizer import MidiTokenizer\n"
        "try:\n"
        "    MidiTokenizer.build(TokenConfig(tokenizer='remi'))\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert "pip install 'amtprep[tokens]'" in out.stdout, out.stderr


@pytest.mark.slow
def test_run_publishes_tokenizer_and_vocab_beside_the_data(corpus, tmp_path, tiny_bert):
    out = tmp_path / "out"
    args = run_args(corpus, out, tiny_bert, "--tokenizer_preset", "text2midi")
    assert main([*args, "--max_midi_tokens", "64", "--workers", "2"]) == 0
    final = pq.read_table(sorted((out / "final").glob("data-*.parquet"))[0])
    assert {"tokens", "n_tokens_midi", "tokens_truncated"} <= set(final.column_names)
    assert max(len(t) for t in final.column("tokens").to_pylist()) <= 64
    assert sorted(p.name for p in (out / "final").iterdir() if p.suffix != ".parquet") == [
        "README.md"
    ]  # datasets loads data_dir=final as it is
    vocab = json.loads((out / "vocab.json").read_text())
    assert len(vocab) == 524 and vocab["BOS_None"] == 1 and vocab["EOS_None"] == 2
    reloaded = miditok.REMI(params=out / "tokenizer.json")
    assert reloaded.vocab == vocab
    manifest = json.loads((out / "releases" / "final" / "manifest.json").read_text())
    for name in ("tokenizer.json", "vocab.json"):
        digest = hashlib.sha256((out / name).read_bytes()).hexdigest()
        assert manifest["artifacts"][name] == digest
    first_file = sorted((out / "final").glob("*.parquet"))[0]
    provenance = json.loads(pq.read_schema(first_file).metadata[b"amtprep"])
    assert provenance["midi_settings"]["artifacts"] == manifest["artifacts"]
    assert provenance["midi_settings"]["miditok"] == miditok_version()
    assert main(args + ["--max_midi_tokens", "64", "--workers", "2"]) == 0  # nothing to redo


def miditok_version() -> str:
    from importlib.metadata import version

    return version("miditok")


@pytest.mark.slow
def test_resume_under_another_miditok_version_is_refused(corpus, tmp_path, tiny_bert):
    out = tmp_path / "out"
    args = [*run_args(corpus, out, tiny_bert, "--tokenizer", "remi"), "--stages", "midi"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    other = (
        "import sys\n"
        "import amtprep.versions as versions\n"
        "versions.miditok_version = lambda: '3.1.0'  # as if miditok were upgraded\n"
        "from amtprep.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", other, *args, "--mode", "continue"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 4, proc.stderr
    assert f"miditok: '{miditok_version()}' -> '3.1.0'" in proc.stderr
    again = run_cli(*args, "--mode", "continue")  # the same miditok resumes (nothing to do)
    assert again.returncode == 0, again.stderr


@pytest.mark.slow
def test_a_killed_worker_gives_a_timeout_row_in_the_token_schema(tmp_path):
    from tests.midi.conftest import slow_midi

    records = records_for(tmp_path, {"slow.mid": slow_midi(), "ok.mid": generate_midi(2)})
    rows, stage = stage_rows(tmp_path, records, TokenConfig(tokenizer="remi"), file_timeout=1.0)
    assert rows[0]["error_type"] == "timeout" and rows[0]["tokens"] is None
    assert rows[1]["status"] == "ok" and rows[1]["tokens"]
    assert stage.counters()["timeouts"] == 1


def test_tokens_load_miditok_without_torch(tmp_path):
    (tmp_path / "a.mid").write_bytes(generate_midi(3))
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from amtprep.config import MidiConfig, TokenConfig\n"
        "from amtprep.midi import MidiStage\n"
        "from tests.midi.conftest import records_for\n"
        "def main():\n"
        "    cfg = MidiConfig(tokens=TokenConfig(tokenizer='remi'), cache_dir=Path(sys.argv[1]))\n"
        "    with MidiStage(cfg) as stage:\n"
        "        rows = stage.process(records_for(Path(sys.argv[1]), {'a.mid': None}))\n"
        "    assert rows.column('tokens').to_pylist()[0], rows.column('error').to_pylist()\n"
        "    assert 'torch' not in sys.modules, 'torch imported'\n"
        "if __name__ == '__main__':\n"
        "    main()\n"
    )
    script = tmp_path / "probe.py"
    script.write_text(code)
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr


def test_token_flags_without_a_tokenizer_are_refused(tmp_path, capsys):
    args = ["--input_file", str(tmp_path / "in.jsonl"), "--output_dir", str(tmp_path / "out")]
    assert main([*args, "--max_midi_tokens", "8"]) == 4
    assert "--max_midi_tokens and --tokens_bos_eos need --tokenizer" in capsys.readouterr().err
