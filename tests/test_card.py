"""The dataset card: parseable front matter with a configs block, every column described."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from amtprep.card import CARRIED, write_dataset_card

SCHEMA = pa.schema(
    [
        ("idx", pa.int64()),
        ("caption", pa.string()),
        ("duration_s", pa.float64()),
        ("programs", pa.list_(pa.int16())),
        ("embedding", pa.list_(pa.float32(), 4)),
        ("genre", pa.list_(pa.string())),  # a MidiCaps column amtprep does not know
    ],
    metadata={"amtprep.text.pooling": "mean", "unrelated": "x"},
)
SETTINGS = {
    "text_model": "sentence-transformers/all-MiniLM-L6-v2",
    "weights_sha256": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "pooling": "mean",
    "max_length": 256,
    "midi": {"backend": "symusic", "feature_version": 1},
}
COUNTS = {"rows": 2, "failures": {"midi": 3, "text": 1}}


def _front_matter(text: str) -> dict:
    yaml = pytest.importorskip("yaml")
    assert text.startswith("---\n")
    header, _, _ = text[4:].partition("\n---\n")
    return yaml.safe_load(header)


def test_front_matter_declares_the_parquet_files_as_train(tmp_path: Path) -> None:
    card = write_dataset_card(tmp_path, SCHEMA, COUNTS, SETTINGS)
    assert card == tmp_path / "README.md"
    meta = _front_matter(card.read_text(encoding="utf-8"))
    assert meta["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data-*.parquet"}]}
    ]
    assert meta["size_categories"] == ["n<1K"]


def test_every_column_is_listed_with_type_and_description(tmp_path: Path) -> None:
    text = write_dataset_card(tmp_path, SCHEMA, COUNTS, SETTINGS).read_text(encoding="utf-8")
    rows = {
        line.split(" | ")[0].strip("| `"): line
        for line in text.splitlines()
        if line.startswith("| `")
    }
    for field in SCHEMA:
        assert field.name in rows, field.name
    assert "`list<int16>`" in rows["programs"] and "128 means drums" in rows["programs"]
    assert "`fixed_size_list<float>[4]`" in rows["embedding"]
    assert CARRIED in rows["genre"]
    assert CARRIED not in rows["duration_s"]


def test_settings_provenance_and_counts_are_shown(tmp_path: Path) -> None:
    text = write_dataset_card(tmp_path, SCHEMA, COUNTS, SETTINGS).read_text(encoding="utf-8")
    assert "| `text_model` | `sentence-transformers/all-MiniLM-L6-v2` |" in text
    assert SETTINGS["weights_sha256"] in text
    assert "| `midi.backend` | `symusic` |" in text
    assert "| `amtprep.text.pooling` | `mean` |" in text and "unrelated" not in text
    assert "| failures.midi | 3 |" in text and "| rows | 2 |" in text


def test_empty_settings_and_counts_still_make_a_valid_card(tmp_path: Path) -> None:
    text = write_dataset_card(tmp_path, pa.schema([("idx", pa.int64())]), {}, {}).read_text(
        encoding="utf-8"
    )
    meta = _front_matter(text)
    assert "size_categories" not in meta and meta["configs"][0]["config_name"] == "default"
    assert text.count("Not recorded.") == 2


def test_datasets_loads_the_folder_through_the_card(tmp_path: Path, monkeypatch) -> None:
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    final = tmp_path / "final"
    final.mkdir()
    table = pa.table({"idx": [0, 1], "caption": ["a", "b"]})
    pq.write_table(table, final / "data-00000-of-00001.parquet")
    (final / "stray.parquet").write_bytes(b"not parquet")  # the configs glob must skip it
    write_dataset_card(final, table.schema, {"rows": 2}, {})
    ds = datasets.load_dataset(str(final), split="train", cache_dir=str(tmp_path / "cache"))
    assert ds["idx"] == [0, 1]


def test_n_tokens_is_described_as_the_stage_counts_it(tmp_path: Path, tiny_bert: Path) -> None:
    from amtprep.config import TextConfig
    from amtprep.records import Record
    from amtprep.text import TextStage

    long_caption = "a slow piano piece in C major with soft strings " * 20
    stage = TextStage(TextConfig(model=str(tiny_bert), max_length=16))
    try:
        table = stage.process([Record(0, "r0", "a.mid", "/data/a.mid", long_caption)])
    finally:
        stage.close()
    row = table.to_pylist()[0]
    assert row["truncated"] and row["n_tokens"] == 16  # counted after truncation
    text = write_dataset_card(tmp_path, table.schema, COUNTS, SETTINGS).read_text(encoding="utf-8")
    (described,) = [line for line in text.splitlines() if line.startswith("| `n_tokens`")]
    assert "after truncation" in described and "at most max_length" in described
    assert "before truncation" not in described
