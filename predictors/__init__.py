"""Accuracy / ranking predictors over encoded architectures."""
