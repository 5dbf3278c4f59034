"""Offline training: data, models, evaluation and the BentoML model store."""
