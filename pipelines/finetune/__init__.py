"""Fine-tune a reusable TF Hub module on labeled data and export it as the next version; release versions.

`finetune(module, data, output_root)` runs one fine-tuning (`run`), on
examples read by `labeled`, trained by `training`; `python -m
pipelines.finetune` is its command line (`cli`). `release` validates a new
version against its parent and publishes it. Design: docs/design/orchestration.md.
"""

from pipelines.finetune.errors import FinetuneError
from pipelines.finetune.run import FinetuneResult, finetune
from pipelines.finetune.training import Hyperparameters

__all__ = ["FinetuneError", "FinetuneResult", "Hyperparameters", "finetune"]
