#!/usr/bin/env python
"""Process a paired MIDI + caption file (see ``python process.py --help``)."""

from amtprep.cli import main

if __name__ == "__main__":
    raise SystemExit(main(prog="process.py"))
