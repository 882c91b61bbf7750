"""Training: DeepSpeed engine, the loop, checkpoints, EMA, metrics."""
