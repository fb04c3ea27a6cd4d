"""``python -m ml_tasks``: the command line (``ml_tasks.cli``)."""

import sys

from ml_tasks.cli import main

sys.exit(main())
