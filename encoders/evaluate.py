"""Score a challenge submission against the held-out test fMRI, as the Algonauts 2023 organisers do.

Per subject and hemisphere: Pearson r of every vertex over the test images, its median, the median per ROI, and
the challenge score (`encoders.scoring.challenge_score`: the mean over vertices of the noise-normalised r^2).
Overall, as in the challenge paper, the mean of the per-vertex score over all vertices of all subjects and both
hemispheres; beside it the mean of the per-subject scores. Intervals resample the test images with replacement
(each subject's own images; one resample of a subject serves both its hemispheres).

Needs ``subjXX/test_split/test_fmri/{lh,rh}_test_fmri.npy`` and ``subjXX/test_split/noise_ceiling/
{lh,rh}_noise_ceiling.npy`` (the post-challenge release has both; the demo data writes them).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from encoders.bootstrap import (
    BootstrapCI,
    percentile_interval,
    resample_indices,
    resampled_r,
)
from encoders.challenge import ALL_VERTICES, list_subjects, load_subject
from encoders.errors import ChallengeDataError
from encoders.scoring import (
    challenge_score,
    challenge_score_rows,
    pearson_r,
    roi_medians,
)
from encoders.submission import read_submission
from nsd.layout import HEMISPHERES, NOISE_CEILING_FILE, TEST_FMRI_FILE, subject_number

__all__ = ["Evaluation", "HemisphereScore", "evaluate_predictions", "evaluate_submission"]


@dataclass(frozen=True)
class HemisphereScore:
    """Test-set accuracy of one subject's hemisphere.

    Attributes
    ----------
    subject : int
    hemisphere : {"lh", "rh"}
    score : BootstrapCI
        Challenge score (percent, mean over vertices) with its interval over resampled test images.
    median_r : float
        Median over vertices of Pearson r.
    roi_median_r : dict of str to float
        Median r per ROI present on the hemisphere ("All vertices" first).
    per_vertex : ndarray of shape (n_vertices,)
        The per-vertex challenge score, percent.
    """

    subject: int
    hemisphere: str
    score: BootstrapCI
    median_r: float
    roi_median_r: dict[str, float]
    per_vertex: np.ndarray = field(repr=False)

    @property
    def n_vertices(self) -> int:
        return int(self.per_vertex.size)


@dataclass(frozen=True)
class Evaluation:
    """Challenge score of a submission: per hemisphere, per subject and overall.

    Attributes
    ----------
    hemispheres : list of HemisphereScore
        Subject by subject, lh then rh.
    score : BootstrapCI
        Mean per-vertex challenge score over all vertices of all subjects and hemispheres (the challenge's
        aggregate), with its interval.
    subject_scores : dict of int to float
        Per subject, the mean per-vertex score over both hemispheres.
    mean_of_subjects : float
        Mean of `subject_scores`.
    """

    hemispheres: list[HemisphereScore]
    score: BootstrapCI
    subject_scores: dict[int, float]
    mean_of_subjects: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary: ``{"score": ..., "subjects": {"subj01": {"lh": ..., "rh": ...}}, ...}``."""
        subjects: dict[str, dict[str, float]] = {}
        details: dict[str, dict[str, Any]] = {}
        for hemi in self.hemispheres:
            key = f"subj{hemi.subject:02d}"
            subjects.setdefault(key, {})[hemi.hemisphere] = hemi.score.estimate
            details.setdefault(key, {})[hemi.hemisphere] = {
                "score": hemi.score.estimate,
                "score_interval": [hemi.score.low, hemi.score.high],
                "median_r": hemi.median_r,
                "roi_median_r": hemi.roi_median_r,
                "n_vertices": hemi.n_vertices,
            }
        return {
            "score": self.score.estimate,
            "score_interval": [self.score.low, self.score.high],
            "level": self.score.level,
            "mean_of_subjects": self.mean_of_subjects,
            "subjects": subjects,
            "subject_scores": {f"subj{s:02d}": value for s, value in self.subject_scores.items()},
            "details": details,
            "definition": (
                "per vertex: r < 0 -> 0, 100 * r^2 / noise ceiling (0 -> 1e-14), capped at 100; score: the mean "
                "over all vertices of all subjects and hemispheres"
            ),
        }

    def format(self) -> str:
        """Printable table: one line per subject and hemisphere, then the overall score."""
        level = f"{self.score.level:.0%}"
        lines = [f"challenge score on the test images (% of the noise ceiling) [bootstrap {level} interval]"]
        for hemi in self.hemispheres:
            lines.append(
                f"  subj{hemi.subject:02d} {hemi.hemisphere}: {hemi.score.estimate:5.1f} "
                f"[{hemi.score.low:.1f}, {hemi.score.high:.1f}]  median r {hemi.median_r:.3f}  "
                f"({hemi.n_vertices} vertices)"
            )
        lines.append(
            f"  overall (mean over all vertices): {self.score.estimate:.1f} [{self.score.low:.1f}, "
            f"{self.score.high:.1f}]; mean of subjects {self.mean_of_subjects:.1f}"
        )
        return "\n".join(lines)


def _test_split(subject: Any) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The subject's test fMRI and noise ceiling, or an error naming the folder that lacks them."""
    folder = subject.rois.roi_dir.parent
    if subject.test_fmri is None:
        raise ChallengeDataError(
            f"Missing {folder / TEST_FMRI_FILE.format(hemi='{lh,rh}')}: scoring on the test images needs the test "
            "fMRI (in the post-challenge release of the data)"
        )
    if subject.noise_ceiling is None:
        raise ChallengeDataError(
            f"Missing {folder / NOISE_CEILING_FILE.format(hemi='{lh,rh}')}: the challenge score needs the test "
            "split's noise ceiling"
        )
    return subject.test_fmri, subject.noise_ceiling


def evaluate_predictions(
    predictions: dict[int, dict[str, np.ndarray]],
    data_dir: str | os.PathLike,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Evaluation:
    """Score ``{subject: {"lh": (n_test, n_lh), "rh": ...}}`` predictions against each subject's test fMRI.

    Shapes must match the test fMRI (use `evaluate_submission` for files, which checks them first). Interval
    resamples of subject ``s`` use ``seed + s``.
    """
    hemispheres: list[HemisphereScore] = []
    subject_scores: dict[int, float] = {}
    resampled_totals: list[np.ndarray] = []
    for number in sorted(predictions):
        subject = load_subject(data_dir, number)
        test_fmri, ceiling = _test_split(subject)
        indices = resample_indices(subject.n_test, n_boot, seed + number)
        sums = []
        # a resample of fewer than 3 distinct images has no usable correlation anywhere: it is left out
        degenerate = (np.diff(np.sort(indices, axis=1), axis=1) != 0).sum(axis=1) + 1 < 3
        for hemi in HEMISPHERES:
            y_true = np.asarray(test_fmri[hemi], dtype=np.float32)
            y_pred = np.asarray(predictions[number][hemi], dtype=np.float32)
            if y_pred.shape != y_true.shape:
                raise ChallengeDataError(
                    f"subj{number:02d} {hemi}: predictions have shape {y_pred.shape} but the test fMRI has "
                    f"{y_true.shape}"
                )
            r = np.asarray(pearson_r(y_true, y_pred), dtype=np.float64)
            per_vertex, mean = challenge_score(r, ceiling[hemi])
            samples = np.concatenate(
                [challenge_score_rows(block, ceiling[hemi]) for block in resampled_r(y_true, y_pred, indices)]
            )
            samples[degenerate] = np.nan
            sums.append(samples * per_vertex.size)
            medians = roi_medians(r, subject.rois.masks(hemi))  # "All vertices" first, then every ROI present
            hemispheres.append(
                HemisphereScore(
                    subject=number,
                    hemisphere=hemi,
                    score=percentile_interval(mean, samples, level),
                    median_r=medians[ALL_VERTICES],
                    roi_median_r=medians,
                    per_vertex=per_vertex,
                )
            )
        own = [h for h in hemispheres if h.subject == number]
        subject_scores[number] = float(np.concatenate([h.per_vertex for h in own]).mean())
        resampled_totals.append(sums[0] + sums[1])
    if not hemispheres:
        raise ChallengeDataError("No predictions to score")
    n_total = sum(h.n_vertices for h in hemispheres)
    overall = float(np.concatenate([h.per_vertex for h in hemispheres]).mean())
    samples = np.sum(resampled_totals, axis=0) / n_total
    return Evaluation(
        hemispheres=hemispheres,
        score=percentile_interval(overall, samples, level),
        subject_scores=subject_scores,
        mean_of_subjects=float(np.mean(list(subject_scores.values()))),
    )


def evaluate_submission(
    submission: str | os.PathLike,
    data_dir: str | os.PathLike,
    *,
    subjects: Iterable[int | str] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Evaluation:
    """Check a submission zip or folder (`encoders.submission.read_submission`) and score it on the test images.

    ``subjects=None`` expects and scores every subject of ``data_dir``. A missing test fMRI or noise ceiling, a
    file of the wrong shape or dtype, and NaN/inf predictions are errors naming the file.
    """
    numbers = [subject_number(s) for s in (subjects if subjects is not None else list_subjects(data_dir))]
    predictions = read_submission(submission, data_dir, numbers)
    return evaluate_predictions(predictions, data_dir, n_boot=n_boot, level=level, seed=seed)
