"""Training, evaluation, inference and checkpoints."""
