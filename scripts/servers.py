"""``python scripts/servers.py ARGS`` is ``python -m devstack ARGS`` (kept for callers that run this path).

The code lives in the ``devstack`` package at the repository root; see ``python -m devstack --help``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devstack.__main__ import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
