"""`python -m sengadm` is `sengadm`."""

import sys

from sengadm.cli import main

sys.exit(main())
