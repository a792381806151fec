"""``python -m benchmarks.extensions``."""

import sys

from benchmarks.extensions.cli import main

if __name__ == "__main__":
    sys.exit(main())
