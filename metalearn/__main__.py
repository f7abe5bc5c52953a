"""``python -m metalearn`` is the ``metalearn`` command."""

import sys

from metalearn.cli.main import main

sys.exit(main())
