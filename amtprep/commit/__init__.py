"""What is committed: the per-stage commit log and store, identity checks, atomic publishing.

Used by the runner (commits), merge and the pipeline (identity, publishing) and status (read
only). See docs/architecture.md for the protocol.
"""
