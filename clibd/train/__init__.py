"""Training: set-up, the contrastive loop, loss, optimiser and schedule, checkpoints, DNA pretraining."""
