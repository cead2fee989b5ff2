"""`python -m sengd` is `sengd`."""

import sys

from sengd.cli import main

sys.exit(main())
