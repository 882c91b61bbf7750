"""Evaluation of trained models (STS Spearman)."""
