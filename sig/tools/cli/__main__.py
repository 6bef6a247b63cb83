"""``python -m sig``: the same as the ``sig`` command."""

import sys

from sig.tools.cli import main

sys.exit(main())
