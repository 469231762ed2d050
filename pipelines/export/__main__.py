"""`python -m pipelines.export`."""

import sys

from pipelines.export.cli import main

sys.exit(main())
