"""Which trials train and which test: the organisers' challenge split, the shared 1000, or the user's own ids.

The challenge recipe (``challenge_data_preparation.py`` of gifale95/algonauts_2023): the last 3 completed
sessions are held out; test images are those shown only in them, minus the shared images, except (for a subject
who completed every session of the design) a shared image whose 3 trials all fall in the held-out sessions. The
training rows average only the trials of the training sessions; test rows average all trials of a test image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nsd.tree import RawNsdError

__all__ = ["CHALLENGE_TEST_SESSIONS", "TEST_SPLITS", "TrialSplit", "split_trials"]

CHALLENGE_TEST_SESSIONS = 3
TEST_SPLITS = ("challenge", "shared1000")


@dataclass(frozen=True)
class TrialSplit:
    """Sorted unique train / test NSD ids, each trial's row among them (-1: not used), and each test image's
    number of trials (for the noise ceiling's norm term)."""

    train_ids: np.ndarray
    test_ids: np.ndarray
    train_row: np.ndarray
    test_row: np.ndarray
    test_repeats: np.ndarray


def _rows(trial_ids: np.ndarray, ids: np.ndarray, used: np.ndarray) -> np.ndarray:
    """Row of each used trial's id in the sorted, non-empty ``ids`` (-1 for unused trials or ids not in ``ids``)."""
    position = np.minimum(np.searchsorted(ids, trial_ids), len(ids) - 1)
    return np.where(used & (ids[position] == trial_ids), position, -1)


def _challenge_ids(
    trial_ids: np.ndarray, session: np.ndarray, n_sessions: int, shared: np.ndarray, complete: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train ids, test ids, trials used for training) of the organisers' recipe."""
    if n_sessions <= CHALLENGE_TEST_SESSIONS:
        raise RawNsdError(
            f"the challenge split holds out the last {CHALLENGE_TEST_SESSIONS} sessions; only {n_sessions} "
            "sessions were read, so nothing is left to train on"
        )
    in_train = session < n_sessions - CHALLENGE_TEST_SESSIONS
    train_ids = np.unique(trial_ids[in_train])
    held_out = trial_ids[~in_train]
    candidates = held_out[~np.isin(held_out, train_ids)]
    excluded = shared
    if complete:
        values, counts = np.unique(candidates, return_counts=True)
        excluded = np.setdiff1d(shared, values[counts == CHALLENGE_TEST_SESSIONS])
    test_ids = np.unique(candidates[~np.isin(candidates, excluded)])
    return train_ids, test_ids, in_train


def split_trials(
    trial_ids: np.ndarray,
    session: np.ndarray,
    n_sessions: int,
    *,
    test: str | Sequence[int] | np.ndarray,
    shared: np.ndarray,
    complete: bool,
) -> TrialSplit:
    """Split the trials read (``trial_ids`` NSD id per trial, ``session`` 0-based index of its session among the
    ``n_sessions`` read) by ``test``: ``"challenge"``, ``"shared1000"`` (the shared images the subject saw) or
    explicit NSD ids (each must have been shown in the sessions read). ``complete``: the subject has every session
    of the design (the challenge's exception for shared images)."""
    trial_ids = np.asarray(trial_ids, dtype=np.int64)
    if isinstance(test, str) and test not in TEST_SPLITS:
        raise RawNsdError(f"Unknown test={test!r}; expected one of {list(TEST_SPLITS)} or a list of NSD ids")
    if isinstance(test, str) and test == "challenge":
        train_ids, test_ids, train_used = _challenge_ids(trial_ids, session, n_sessions, shared, complete)
    else:
        if isinstance(test, str):  # the shared 1000 this subject saw
            test_ids = np.intersect1d(trial_ids, shared)
        else:
            test_ids = np.unique(np.asarray(test, dtype=np.int64))
            unseen = np.setdiff1d(test_ids, trial_ids)
            if unseen.size:
                raise RawNsdError(
                    f"test ids {unseen[:10].tolist()} ({unseen.size} of {test_ids.size}) were not shown to this "
                    f"subject in the {n_sessions} sessions read"
                )
        train_ids = np.setdiff1d(trial_ids, test_ids)
        train_used = np.ones(len(trial_ids), dtype=bool)
    if not len(test_ids) or not len(train_ids):
        raise RawNsdError(
            f"test={test!r} leaves {len(train_ids)} training and {len(test_ids)} test images in the "
            f"{n_sessions} sessions read; both must be non-empty"
        )
    test_row = _rows(trial_ids, test_ids, np.ones(len(trial_ids), dtype=bool))
    repeats = np.bincount(test_row[test_row >= 0], minlength=len(test_ids))
    return TrialSplit(train_ids, test_ids, _rows(trial_ids, train_ids, train_used), test_row, repeats)
