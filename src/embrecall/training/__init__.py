"""Training the two-tower model: examples, losses, negatives, trainer."""
