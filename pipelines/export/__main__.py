"""`python -m pipelines.export`."""

import sys

from pipelines.export import main

sys.exit(main())
