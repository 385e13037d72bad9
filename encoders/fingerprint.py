"""Content fingerprints of a subject's data files, so cached grid results are reused only for the same data.

A fingerprint covers every file a fit or score reads: the training and test fMRI, the test noise ceiling, the
ROI masks and mappings, and the image file names (row order and NSD ids). Per file it hashes the relative path,
the size, the modification time and the bytes: all of them for files up to `FULL_HASH_BYTES`, else
`SAMPLED_BLOCKS` blocks of `BLOCK_BYTES` spread evenly from the first byte to the last. Replacing a file,
rewriting it, or changing its length always changes the fingerprint; an edit in place that keeps the size and
the modification time (``cp -p`` of a file altered between the sampled blocks) is the one change it can miss.
Hashing 1.4 GB of fMRI per subject in full would cost seconds on every rerun, the sampled hash milliseconds.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from encoders.challenge import list_images, subject_dir

FULL_HASH_BYTES = 8 * 2**20
BLOCK_BYTES = 64 * 2**10
SAMPLED_BLOCKS = 32
# the data a subject's results depend on, relative to subjXX; image names are hashed from the image listings
_DATA_FOLDERS = ("training_split/training_fmri", "test_split/test_fmri", "test_split/noise_ceiling", "roi_masks")


def file_digest(path: str | os.PathLike) -> str:
    """Hash of one file's size, modification time and bytes (sampled above `FULL_HASH_BYTES`)."""
    path = Path(path)
    stat = path.stat()
    digest = hashlib.blake2b(f"{stat.st_size}:{stat.st_mtime_ns}".encode(), digest_size=16)
    with path.open("rb") as handle:
        if stat.st_size <= FULL_HASH_BYTES:
            digest.update(handle.read())
        else:
            last = stat.st_size - BLOCK_BYTES
            for index in range(SAMPLED_BLOCKS):
                handle.seek(last * index // (SAMPLED_BLOCKS - 1))
                digest.update(handle.read(BLOCK_BYTES))
    return digest.hexdigest()


def _data_files(folder: Path) -> Iterable[Path]:
    """The files of ``_DATA_FOLDERS`` under a subject folder, in a stable order."""
    for relative in _DATA_FOLDERS:
        if (folder / relative).is_dir():
            yield from sorted(path for path in (folder / relative).iterdir() if path.is_file())


def subject_fingerprint(data_dir: str | os.PathLike, subject: int | str) -> str:
    """Fingerprint of everything a subject's fits and scores read (see the module docstring)."""
    folder = subject_dir(data_dir, subject)
    digest = hashlib.blake2b(digest_size=16)
    for split in ("train", "test"):
        _, paths = list_images(data_dir, subject, split)
        digest.update("\n".join(path.name for path in paths).encode())
    for path in _data_files(folder):
        digest.update(f"{path.relative_to(folder).as_posix()}={file_digest(path)}\n".encode())
    return digest.hexdigest()
