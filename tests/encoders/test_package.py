"""``import encoders`` stays light: the numerics and the challenge loaders need no torch, PIL, h5py or nilearn."""

from __future__ import annotations

import subprocess
import sys


def test_import_encoders_loads_nothing_heavy():
    code = (
        "import sys, encoders\n"
        "print(sorted(m for m in ('torch', 'PIL', 'h5py', 'nilearn', 'matplotlib') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
