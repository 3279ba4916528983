"""The GRPO training loop: trainer, batch building, checkpoints, logging."""
