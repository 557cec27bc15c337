"""``python -m unisteer``: the same command line as ``unisteer``."""

import sys

from unisteer.cli import main

sys.exit(main())
