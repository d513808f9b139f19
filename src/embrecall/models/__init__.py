"""Recall models: each one is (or backs) a channel that answers "top-k items for this user"."""
