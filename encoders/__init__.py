"""Fit and score fMRI encoding models (PCA, ridge) on features read lazily from the store."""
