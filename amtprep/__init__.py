"""amtprep: a streaming, exactly-once preprocessor for paired MIDI + caption datasets.

Data flow: read records -> MIDI stage / text stage -> Parquet shards + checkpoints -> merge.
"""

__version__ = "0.1.0"
