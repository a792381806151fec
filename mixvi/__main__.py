"""``python -m mixvi``: the ``mixvi`` command line (see ``mixvi.cli``)."""

import sys

from mixvi.cli import main

sys.exit(main())
