"""``python -m qlarius_jobs.cli``: the console script without the script (the tests use it)."""

import sys

from qlarius_jobs.cli.entry import main

if __name__ == "__main__":  # not when a spawned process re-imports the main module
    sys.exit(main())
