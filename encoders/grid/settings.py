"""Encoder settings of the grid: the recipe of one encoder (PCA, ridge, alpha selection) and model names."""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from encoders.errors import InvalidArgumentError
from encoders.ridge import CLOSED_FORM_CV

__all__ = [
    "DEFAULT_BANDED_RATIOS",
    "DEFAULT_SETTING_ALPHAS",
    "RIDGE_FORMS",
    "SPACE_JOINS",
    "EncoderSetting",
    "Space",
    "parse_model",
    "parse_spaces",
    "spaces_name",
]

DEFAULT_SETTING_ALPHAS = tuple(float(a) for a in np.logspace(-2, 8, 11))  # 1e-2 ... 1e8, one per decade
RIDGE_FORMS = ("primal", "kernel")
# how a model of several feature spaces is fitted: "concat" = PCA per space, columns side by side, one ridge;
# "banded" = the same columns, one penalty per space and vertex (encoders.ridge.BandedRidgeCV), see
# `encoders.grid.pipeline.fit_encoder`
SPACE_JOINS = ("concat", "banded")
DEFAULT_BANDED_RATIOS = 10  # simplex grid of step 1/10: 11 penalty ratios for two spaces, 66 for three
SPACE_SEPARATOR = "+"

Space = tuple[str, str]
"""One feature space: (backbone, layer)."""


@dataclass(frozen=True)
class EncoderSetting:
    """One encoder recipe: optional PCA, then ridge regression with the alpha chosen per vertex.

    Parameters
    ----------
    pca : int or None, default=100
        Number of principal components fitted on the training rows; None fits on the full features.
    ridge : {"primal", "kernel"}, default="primal"
        Ridge in feature space (`RidgeCV`) or on the linear kernel (`KernelRidgeCV`, best without PCA when
        features outnumber images). Named ``solver`` before; that key still reads, with a warning. (The
        estimators' own ``solver`` is the decomposition they use, as in scikit-learn.)
    alphas : tuple of float, default=DEFAULT_SETTING_ALPHAS
        Ridge penalties tried per vertex; ``(0.0,)`` is ordinary least squares (the devkit's LinearRegression).
    cv : int, "loo" or "gcv", default=5
        Folds for choosing alpha, closed-form leave-one-out, or generalised cross-validation.
    name : str or None, default=None
        Label in model names; None builds one such as ``"pca100-ridge-cv5"`` or ``"pca50-ols"``.
    join : {"concat", "banded"}, default="concat"
        How a model of several feature spaces (``"alexnet:features.5+alexnet:classifier.5"``) is fitted:
        ``"concat"`` fits the PCA of each space on its own, puts the components side by side and fits one ridge
        (without PCA the raw features are put side by side); ``"banded"`` fits the same columns with one penalty
        per space and vertex (`encoders.ridge.BandedRidgeCV`, ``ridge`` picking its solver), and partitions the
        validation variance between the spaces (`encoders.grid.banded`). Ignored for one space.
    ratios : int, default=DEFAULT_BANDED_RATIOS
        Banded join only: the penalty ratios searched are the simplex grid of step 1/ratios (its corners drop all
        spaces but one), each times every alpha, as `encoders.ridge.BandedRidgeCV` says.
    """

    pca: int | None = 100
    ridge: str = "primal"
    alphas: tuple[float, ...] = DEFAULT_SETTING_ALPHAS
    cv: int | str = 5
    name: str | None = None
    join: str = "concat"
    ratios: int = DEFAULT_BANDED_RATIOS

    def __post_init__(self) -> None:
        object.__setattr__(self, "alphas", tuple(float(a) for a in np.atleast_1d(self.alphas)))
        if self.pca is not None and (isinstance(self.pca, bool) or int(self.pca) != self.pca or self.pca < 1):
            raise InvalidArgumentError(f"Invalid pca={self.pca!r} in EncoderSetting; expected a positive int or None")
        if self.ridge not in RIDGE_FORMS:
            raise InvalidArgumentError(
                f"Unknown ridge={self.ridge!r} in EncoderSetting; expected one of {list(RIDGE_FORMS)}"
            )
        if not self.alphas or min(self.alphas) < 0 or not np.all(np.isfinite(self.alphas)):
            raise InvalidArgumentError(f"Invalid alphas={self.alphas!r} in EncoderSetting; expected finite values >= 0")
        if self.cv not in CLOSED_FORM_CV and (isinstance(self.cv, bool) or not isinstance(self.cv, int) or self.cv < 2):
            raise InvalidArgumentError(
                f"Invalid cv={self.cv!r} in EncoderSetting; expected an int >= 2, 'loo' or 'gcv'"
            )
        if self.join not in SPACE_JOINS:
            raise InvalidArgumentError(
                f"Unknown join={self.join!r} in EncoderSetting; expected one of {list(SPACE_JOINS)}"
            )
        if isinstance(self.ratios, bool) or not isinstance(self.ratios, int) or self.ratios < 1:
            raise InvalidArgumentError(f"Invalid ratios={self.ratios!r} in EncoderSetting; expected an int >= 1")
        if self.name is not None and not re.fullmatch(r"[\w.+-]+", self.name):
            raise InvalidArgumentError(
                f"Invalid name={self.name!r} in EncoderSetting; use letters, digits, '.', '+', '-', '_'"
            )

    @classmethod
    def from_value(cls, value: EncoderSetting | Mapping[str, Any]) -> EncoderSetting:
        """An `EncoderSetting` from itself or a dict such as ``dict(pca=100, ridge="primal", cv=5)``."""
        if isinstance(value, EncoderSetting):
            return value
        if "solver" in value and "ridge" not in value:  # the key's old name, in results files written before
            warnings.warn("EncoderSetting's 'solver' is now called 'ridge'", FutureWarning, stacklevel=2)
            value = {("ridge" if key == "solver" else key): item for key, item in value.items()}
        unknown = set(value) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise InvalidArgumentError(
                f"Unknown encoder setting keys {sorted(unknown)}; expected some of {list(cls.__dataclass_fields__)}"
            )
        return cls(**value)

    @property
    def label(self) -> str:
        """Short name used in model ids."""
        if self.name:
            return self.name
        features = f"pca{self.pca}" if self.pca else "full"
        if self.alphas == (0.0,):
            return f"{features}-ols"
        fold = self.cv if isinstance(self.cv, str) else f"cv{self.cv}"
        join = "" if self.join == "concat" else f"-{self.join}"
        return f"{features}-{'ridge' if self.ridge == 'primal' else 'kernel'}-{fold}{join}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (stored in result files; ``ratios`` only for the banded join, so the keys of the
        results of other settings stay as they were before it existed)."""
        fields = asdict(self) | {"alphas": list(self.alphas)}
        if self.join != "banded":
            del fields["ratios"]
        return fields


def parse_model(model: str | Sequence[str]) -> Space:
    """``"backbone:layer"`` or ``(backbone, layer)`` -> ``(backbone, layer)``: one feature space."""
    if isinstance(model, str):
        backbone, sep, layer = model.partition(":")
        if not sep or not backbone or not layer:
            raise InvalidArgumentError(
                f"Invalid model={model!r}; expected 'backbone:layer', e.g. 'alexnet:features.12'"
            )
        return backbone, layer
    if len(model) != 2:
        raise InvalidArgumentError(f"Invalid model={model!r}; expected a (backbone, layer) pair")
    return str(model[0]), str(model[1])


def _is_pair(model: Any) -> bool:
    """A ``(backbone, layer)`` pair rather than a sequence of spaces: two strings, neither ``backbone:layer``."""
    return (
        not isinstance(model, str)
        and len(model) == 2
        and all(isinstance(part, str) and ":" not in part for part in model)
    )


def parse_spaces(model: str | Sequence[Any]) -> tuple[Space, ...]:
    """The feature spaces of a model: ``"b:l"``, ``"b:l1+b:l2"``, ``(backbone, layer)``, or a sequence of
    ``"b:l"`` strings / pairs -> ``((backbone, layer), ...)``; a space named twice is an error."""
    if isinstance(model, str):
        spaces = tuple(parse_model(part) for part in model.split(SPACE_SEPARATOR))
    elif _is_pair(model):
        spaces = (parse_model(model),)
    else:
        spaces = tuple(parse_spaces(part)[0] if isinstance(part, str) else parse_model(part) for part in model)
        if any(isinstance(part, str) and SPACE_SEPARATOR in part for part in model):
            raise InvalidArgumentError(f"Invalid model={model!r}; give 'b:l1+b:l2' or a list of 'b:l', not both")
    if not spaces:
        raise InvalidArgumentError(f"Invalid model={model!r}; expected at least one 'backbone:layer'")
    repeated = sorted({f"{b}:{layer}" for b, layer in spaces if spaces.count((b, layer)) > 1})
    if repeated:
        raise InvalidArgumentError(
            f"model {spaces_name(spaces)!r} names the feature space {repeated[0]} twice; give each space once"
        )
    return spaces


def spaces_name(spaces: Sequence[Space]) -> str:
    """``"backbone:layer"`` spaces joined by ``+``: the model's name before its setting label."""
    return SPACE_SEPARATOR.join(f"{backbone}:{layer}" for backbone, layer in spaces)
