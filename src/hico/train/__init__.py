"""Training: data (conversations, stage mixtures) first; stages and the engine build on it."""
