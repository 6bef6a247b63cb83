"""``python -m sig``: the ``sig`` command."""

from sig.tools.cli import main

raise SystemExit(main())
