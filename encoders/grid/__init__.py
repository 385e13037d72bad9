"""Fit and score every (model, encoder setting, subject) combination from the feature store.

A model is one ``backbone:layer`` feature space or several (``"alexnet:features.5+alexnet:classifier.5"``: PCA per
space, the components side by side, one ridge). Each combination is one dask task: read the subject's
training-image features lazily from the store, split them with the devkit's 90/10 split, PCA on the training rows,
ridge with one alpha per vertex for both hemispheres in one call, per-vertex Pearson r on the validation rows, ROI
medians with bootstrap intervals, and the challenge score on the validation rows (an estimate: the official one
scores the test images). A finished combination is saved as its own small netCDF file under ``out/combinations``,
named by a hash of everything that determines it (recipe, features, split, bootstrap, and a fingerprint of the
subject's data files, `encoders.fingerprint`), and skipped on rerun; the combined ``xarray.Dataset`` goes to
``out/results.nc``.

Modules, in the order of the data flow: ``settings`` (what an encoder is), ``combination`` (one task and its
key), ``pipeline`` (the fit and scores of one task; predictions of the test images), ``schedule`` (running tasks on
dask), ``results`` (the combined Dataset), ``fit`` (``fit_grid``, which ties them together).
"""

from __future__ import annotations

from encoders.errors import MissingFeaturesError
from encoders.grid.combination import Combination
from encoders.grid.fit import COMBINATIONS_DIR, fit_grid
from encoders.grid.pipeline import predict_test, predict_validation
from encoders.grid.results import (
    RESULTS_FILE,
    collect_results,
    find_model,
    load_results,
    model_recipe,
)
from encoders.grid.settings import DEFAULT_SETTING_ALPHAS, EncoderSetting, Space, parse_model, parse_spaces, spaces_name

__all__ = [
    "COMBINATIONS_DIR",
    "DEFAULT_SETTING_ALPHAS",
    "RESULTS_FILE",
    "Combination",
    "EncoderSetting",
    "MissingFeaturesError",
    "Space",
    "collect_results",
    "find_model",
    "fit_grid",
    "load_results",
    "model_recipe",
    "parse_model",
    "parse_spaces",
    "predict_test",
    "predict_validation",
    "spaces_name",
]
