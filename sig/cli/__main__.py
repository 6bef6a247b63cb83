"""``python -m sig.cli``: the same as the ``sig`` command."""

import sys

from . import main

sys.exit(main())
