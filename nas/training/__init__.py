"""Training: the supernet's sandwich rule, exact-resume checkpoints, standalone fine-tuning."""

from nas.training.checkpoint import CheckpointError, latest_checkpoint, read_checkpoint
from nas.training.finetune import FinetuneResult, apply_quant_plan, evaluate_finetuned, finetune
from nas.training.objective import Noising, NoisyBatch, noising_of, noisy_batch
from nas.training.sandwich import SupernetTrainer
from nas.training.settings import TrainerConfig

__all__ = [
    "CheckpointError",
    "FinetuneResult",
    "Noising",
    "NoisyBatch",
    "SupernetTrainer",
    "TrainerConfig",
    "apply_quant_plan",
    "evaluate_finetuned",
    "finetune",
    "latest_checkpoint",
    "noising_of",
    "noisy_batch",
    "read_checkpoint",
]
