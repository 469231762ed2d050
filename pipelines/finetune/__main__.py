"""`python -m pipelines.finetune`."""

import sys

from pipelines.finetune.cli import main

sys.exit(main())
