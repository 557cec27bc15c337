import sys

from unisteer.cli import main

sys.exit(main())
