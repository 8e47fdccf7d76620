"""Run the ``genedge`` command with ``python -m genedge``."""

from genedge.cli import main

raise SystemExit(main())
