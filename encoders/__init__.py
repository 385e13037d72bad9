"""Fit and score fMRI encoding models (PCA, ridge) on features read lazily from the feature store."""

from __future__ import annotations

from encoders.challenge import RoiAtlas, SubjectData, list_subjects, load_subject
from encoders.ensemble import fit_ensemble
from encoders.errors import (
    ChallengeDataError,
    EncodersError,
    MissingFeaturesError,
    ResultsError,
    SubmissionError,
    UnknownNameError,
)
from encoders.evaluate import evaluate_predictions, evaluate_submission
from encoders.grid import EncoderSetting, fit_grid, load_results, predict_test
from encoders.leaderboard import best_layers, compare
from encoders.partition import partition_by_roi, partition_variance, r2_score_split, variance_partition
from encoders.pca import PCA
from encoders.ridge import BandedRidgeCV, KernelRidgeCV, RidgeCV
from encoders.scoring import challenge_score, pearson_r, r2_score, roi_medians
from encoders.splits import devkit_split, kfold
from encoders.submission import check_submission, read_submission, write_submission

__all__ = [
    "PCA",
    "BandedRidgeCV",
    "ChallengeDataError",
    "EncoderSetting",
    "EncodersError",
    "KernelRidgeCV",
    "MissingFeaturesError",
    "ResultsError",
    "RidgeCV",
    "RoiAtlas",
    "SubjectData",
    "SubmissionError",
    "UnknownNameError",
    "best_layers",
    "challenge_score",
    "check_submission",
    "compare",
    "devkit_split",
    "evaluate_predictions",
    "evaluate_submission",
    "fit_ensemble",
    "fit_grid",
    "kfold",
    "list_subjects",
    "load_results",
    "load_subject",
    "partition_by_roi",
    "partition_variance",
    "pearson_r",
    "predict_test",
    "r2_score",
    "r2_score_split",
    "read_submission",
    "roi_medians",
    "variance_partition",
    "write_submission",
]


def __getattr__(name: str) -> object:
    """Names that were removed, with what replaces them."""
    if name == "noise_normalized_score":
        raise AttributeError(
            "encoders.noise_normalized_score was removed: it read percent-unit noise ceilings and dropped vertices "
            "with a zero ceiling; encoders.challenge_score(r, noise_ceiling) is the official formula (fraction units)"
        )
    raise AttributeError(f"module 'encoders' has no attribute {name!r}")
