"""``python -m fedfuse.bench.cli``: the same as the ``fedfuse`` command."""

import sys

from fedfuse.bench.cli.main import main

sys.exit(main())
