"""Array backends: plain modules sharing one set of function names, so every solver runs on numpy, torch or CUDA.

A backend is chosen per call (``backend="auto"`` in the estimators), never through global state.
"""

from __future__ import annotations

import importlib
from types import ModuleType

ALL_BACKENDS = ["numpy", "torch", "torch_cuda"]


def get_backend(name: str | ModuleType = "auto") -> ModuleType:
    """Return the backend module called ``name``; ``"auto"`` means torch_cuda when CUDA is usable, else torch.

    Parameters
    ----------
    name : {"auto", "numpy", "torch", "torch_cuda"} or module, default="auto"
        A backend name, or an already imported backend module (returned as is).

    Returns
    -------
    module
        A module exposing ``asarray``, ``to_numpy``, ``eigh``, ``svd``, ``matmul``, ... with the same meaning in
        every backend.
    """
    if isinstance(name, ModuleType):
        if getattr(name, "name", None) not in ALL_BACKENDS:
            raise ValueError(f"Module {name.__name__!r} is not a backend; expected one of {ALL_BACKENDS}")
        return name
    if name == "auto":
        import torch

        name = "torch_cuda" if torch.cuda.is_available() else "torch"
    if name not in ALL_BACKENDS:
        raise ValueError(f"Unknown backend={name!r}; expected one of {ALL_BACKENDS + ['auto']}")
    return importlib.import_module(f"{__name__}.{name}")
