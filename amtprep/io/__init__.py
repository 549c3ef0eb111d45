"""Disk I/O: input readers, and (from other modules) shard writing and checkpoints."""
