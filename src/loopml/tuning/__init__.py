"""Hyperparameter tuning: searches whose trials are ordinary training jobs (Optuna ask-and-tell)."""
