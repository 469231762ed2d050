"""`python -m pipelines.finetune`."""

import sys

from pipelines.finetune import main

sys.exit(main())
