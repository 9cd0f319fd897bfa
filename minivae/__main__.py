"""``python -m minivae``: the ``minivae`` command line."""

import sys

from .cli import main

sys.exit(main())
