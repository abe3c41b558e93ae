"""``python -m edgepart.runtime worker ...``: the entry point of a spawned local worker."""

from __future__ import annotations

from edgepart.runtime.cli import worker_main

raise SystemExit(worker_main())
