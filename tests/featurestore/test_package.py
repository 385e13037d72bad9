"""The package namespace: lazy entry points stay functions however often they are read and after their submodules
are imported."""

from __future__ import annotations

import subprocess
import sys

import pytest

LAZY = {
    "extract": "featurestore.extract",
    "make_demo_data": "featurestore.demo_data",
    "open_stimuli": "featurestore.stimuli",
}


@pytest.mark.parametrize("import_first", [False, True], ids=["lazy-access-first", "submodule-imported-first"])
def test_lazy_names_stay_functions(import_first: bool) -> None:
    lines = ["import importlib, types", "import featurestore"]
    for name, module in LAZY.items():
        if import_first:
            lines.append(f"import {module}")
        lines += [
            f"first = [featurestore.{name} for _ in range(3)]",
            f"import {module}",
            f"from {module} import {name} as direct",
            "assert all(isinstance(f, types.FunctionType) for f in first), first",
            f"assert featurestore.{name} is direct is first[0], featurestore.{name}",
            f"assert isinstance(importlib.import_module({module!r}), types.ModuleType)",
        ]
    done = subprocess.run([sys.executable, "-c", "\n".join(lines)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
