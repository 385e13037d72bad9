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


def test_moved_and_removed_names_say_where_they_went():
    import pytest

    import encoders
    import encoders.demo
    from encoders.figures import write_figures

    with pytest.warns(FutureWarning, match="encoders.demo.write_figures moved to encoders.figures.write_figures"):
        assert encoders.demo.write_figures is write_figures
    with pytest.raises(AttributeError, match="challenge_score"):
        encoders.noise_normalized_score  # noqa: B018
