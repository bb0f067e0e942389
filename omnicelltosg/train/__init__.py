"""Training of CellTOSG-FM: the typed settings (:mod:`~omnicelltosg.train.arguments`), masked-edge
pretraining (:mod:`~omnicelltosg.train.pretraining`), cell-classification fine-tuning and prediction
(:mod:`~omnicelltosg.train.finetuning`). The multi-process Accelerate loop is
:mod:`omnicelltosg.train.accelerated` (imported on its own, so that this package does not need Accelerate).
"""

from omnicelltosg.train.arguments import FinetuningArguments, PretrainingArguments
from omnicelltosg.train.finetuning import finetune, predict
from omnicelltosg.train.pretraining import pretrain

__all__ = ["PretrainingArguments", "FinetuningArguments", "pretrain", "finetune", "predict"]
