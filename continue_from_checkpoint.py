#!/usr/bin/env python
"""Resume an interrupted run: the same as ``process.py --mode continue``."""

from amtprep.cli import main

if __name__ == "__main__":
    raise SystemExit(main(prog="continue_from_checkpoint.py", default_mode="continue"))
