"""Fit and score fMRI encoding models (PCA, ridge) on features read lazily from the feature store."""

from __future__ import annotations

from encoders.challenge import ChallengeDataError, RoiAtlas, SubjectData, list_subjects, load_subject
from encoders.grid import EncoderSetting, fit_grid, load_results, predict_test
from encoders.leaderboard import best_layers, compare
from encoders.pca import PCA
from encoders.ridge import KernelRidgeCV, RidgeCV
from encoders.scoring import noise_normalized_score, pearson_r, r2_score, roi_medians
from encoders.splits import devkit_split, kfold
from encoders.submission import check_submission, write_submission

__all__ = [
    "PCA",
    "ChallengeDataError",
    "EncoderSetting",
    "KernelRidgeCV",
    "RidgeCV",
    "RoiAtlas",
    "SubjectData",
    "best_layers",
    "check_submission",
    "compare",
    "devkit_split",
    "fit_grid",
    "kfold",
    "list_subjects",
    "load_results",
    "load_subject",
    "noise_normalized_score",
    "pearson_r",
    "predict_test",
    "r2_score",
    "roi_medians",
    "write_submission",
]
