"""Evaluation (the one path training and `grpolab eval` share) and early stopping."""
