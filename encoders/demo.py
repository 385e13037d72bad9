"""The whole workflow offline in one call: demo data, features, model grid, leaderboard, figures, report, submission.

Every step reuses what an earlier run left in ``out_dir`` (the data folder, the feature store, finished grid
combinations, figures, report and submission newer than the results), so a rerun takes seconds. The steps are the
library's own (`encoders.figures`, `encoders.submit`, ...), the same that the ``encoders`` commands run.
"""

from __future__ import annotations

import importlib
import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xarray as xr

from encoders import figures, submit
from encoders.challenge import ALL_VERTICES
from encoders.errors import InvalidArgumentError
from encoders.evaluate import evaluate_submission
from encoders.grid import EncoderSetting, fit_grid
from encoders.leaderboard import (
    CHALLENGE_SCORE,
    best_layers,
    best_model,
    format_leaderboard,
    leaderboard,
)
from encoders.report import write_report
from encoders.submission import check_submission

__all__ = [
    "DEMO_BACKBONES",
    "SIZES",
    "DemoOutputs",
    "DemoSize",
    "run_demo",
]

# library code that lived here before: the old names still import, once with a warning
_MOVED = {
    "write_figures": "encoders.figures",
    "write_test_submission": "encoders.submit",
    "write_checked_submission": "encoders.submit",
}


def __getattr__(name: str) -> Any:
    """``encoders.demo.write_figures`` and friends, moved to the library: warn, then return the new function."""
    if name in _MOVED:
        warnings.warn(f"encoders.demo.{name} moved to {_MOVED[name]}.{name}", FutureWarning, stacklevel=2)
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'encoders.demo' has no attribute {name!r}")


DEMO_BACKBONES = ("alexnet.untrained", "ViT-B-32.untrained")
FIGURES_MANIFEST = "figures.json"


@dataclass(frozen=True)
class DemoSize:
    """How big the demo is: data, layers per backbone (None: the catalog's defaults), encoder and bootstrap."""

    n_train: int
    n_test: int
    n_vertices: int
    layers: dict[str, tuple[str, ...]] | None
    pca: int
    n_boot: int


SIZES = {
    "default": DemoSize(n_train=150, n_test=40, n_vertices=1500, layers=None, pca=100, n_boot=1000),
    "tiny": DemoSize(
        n_train=30,
        n_test=4,
        n_vertices=200,
        layers={"alexnet.untrained": ("features.5", "classifier.5"), "ViT-B-32.untrained": ("embedding",)},
        pca=10,
        n_boot=100,
    ),
}


@dataclass
class DemoOutputs:
    """Where the demo put everything."""

    data: Path
    store: Path
    results: Path
    leaderboard_csv: Path
    best_layers_csv: Path
    figures: list[Path] = field(default_factory=list)
    report: Path | None = None
    submission: Path | None = None
    test_score: float = float("nan")
    seconds: float = 0.0

    def describe(self) -> str:
        """The output locations as printed at the end of the demo."""
        figures = "\n".join(f"    {path}" for path in self.figures)
        return (
            f"Outputs ({self.seconds:.0f} s):\n"
            f"  demo data (Algonauts 2023 layout)  {self.data}\n"
            f"  feature store (Zarr)               {self.store}\n"
            f"  grid results (xarray netCDF)       {self.results}\n"
            f"  leaderboard (CSV)                  {self.leaderboard_csv}\n"
            f"  best layer per ROI (CSV)           {self.best_layers_csv}\n"
            f"  HTML report                        {self.report}\n"
            f"  submission zip (checked)           {self.submission}\n"
            f"  its challenge score, test images   {self.test_score:.1f} % of the noise ceiling\n"
            f"  figures:\n{figures}"
        )


def _up_to_date(paths: Sequence[Path], source: Path) -> bool:
    """Every path exists and was written after ``source`` (the results file they are made from)."""
    return all(path.is_file() and path.stat().st_mtime_ns >= source.stat().st_mtime_ns for path in paths)


def _step(number: int, text: str) -> None:
    print(f"\n== {number}/6 {text}", flush=True)


def _model_provenance(results: xr.Dataset) -> dict[str, dict[str, Any]]:
    """Per model: layer, encoder setting (an ensemble's recipe) and each backbone's store provenance (for the
    report; a model of several spaces names its backbones joined by ``+``)."""
    settings = json.loads(results.attrs["settings"]) | json.loads(results.attrs.get("ensembles", "{}"))
    stored = json.loads(results.attrs["provenance"])
    return {
        model: {
            "backbone": backbone,
            "layer": layer,
            "encoder": settings.get(setting, settings.get(model)),
            "features": stored.get(backbone) or {name: stored[name] for name in backbone.split("+") if name in stored},
        }
        for model, backbone, layer, setting in zip(
            results["model"].values.tolist(),
            results["backbone"].values.tolist(),
            results["layer"].values.tolist(),
            results["setting"].values.tolist(),
        )
    }


def run_demo(
    out_dir: str | os.PathLike = "demo_output",
    backbones: Sequence[str] = DEMO_BACKBONES,
    *,
    size: str = "default",
    layers: dict[str, Sequence[str]] | None = None,
    scheduler: Any = None,
    progress: bool = True,
) -> DemoOutputs:
    """Build demo data, extract features, fit the grid, print the leaderboard, write figures, report, submission.

    Parameters
    ----------
    out_dir : str or path, default="demo_output"
        Everything goes here (``data/``, ``features.zarr``, ``results/``, ``figures/``, ``report.html``,
        ``submission/``); an earlier run's outputs are reused.
    backbones : sequence of str, default=("alexnet.untrained", "ViT-B-32.untrained")
        Catalog names. The untrained entries need no download; pretrained ones (``alexnet``) need their weights
        in the torch cache or network access.
    size : {"default", "tiny"}, default="default"
        ``"default"``: 150 training and 40 test images per subject, the catalog's layers, PCA 100 (a few minutes
        on 2 CPU cores); ``"tiny"``: a smoke test in about a minute.
    layers : dict of str to sequence of str, default=None
        Layers per backbone, overriding the size's choice (None there means the catalog's default layers).
    scheduler : optional
        Dask scheduler for the grid (see `encoders.grid.fit_grid`).
    progress : bool, default=True
        Show extraction progress bars and one line per fitted model.
    """
    from featurestore.catalog import get_entry
    from featurestore.demo_data import make_demo_data
    from featurestore.extract import extract

    if size not in SIZES:
        raise InvalidArgumentError(f"Unknown size={size!r}; expected one of {list(SIZES)}")
    preset, started, out = SIZES[size], time.perf_counter(), Path(out_dir)
    _step(1, f"demo data ({preset.n_train} training + {preset.n_test} test images per subject)")
    data = make_demo_data(out / "data", n_train=preset.n_train, n_test=preset.n_test, n_vertices=preset.n_vertices)
    print(f"   {data}")

    _step(2, f"features of {', '.join(backbones)}")
    store = out / "features.zarr"
    chosen = {}
    for backbone in backbones:
        entry = get_entry(backbone)
        picked = (layers or {}).get(backbone) or (preset.layers or {}).get(backbone) or entry.layers
        chosen[backbone] = list(picked)
        report = extract(entry, data, store, layers=chosen[backbone], num_workers=0, progress=progress)
        print(
            f"   {backbone}: {len(chosen[backbone])} layers, {report.rows_computed} images computed "
            f"({report.seconds:.0f} s)"
        )

    _step(3, "model grid (PCA + ridge with per-vertex alpha, both subjects)")
    models = [(backbone, layer) for backbone, names in chosen.items() for layer in names]
    results = fit_grid(
        store,
        data,
        models=models,
        settings=[EncoderSetting(pca=preset.pca)],
        out=out / "results",
        n_boot=preset.n_boot,
        scheduler=scheduler,
        progress=progress,
    )

    _step(4, "leaderboard (median r over validation images; last row: the simulation's noise ceiling)")
    table = leaderboard(results)
    outputs = DemoOutputs(
        data=data,
        store=store,
        results=out / "results" / "results.nc",
        leaderboard_csv=out / "leaderboard.csv",
        best_layers_csv=out / "best_layers.csv",
    )
    table.to_csv(outputs.leaderboard_csv)
    layers_table = best_layers(results, rois=[r for r in results["roi"].values.tolist()])
    layers_table.to_csv(outputs.best_layers_csv, index=False)
    print(format_leaderboard(table))
    overall = layers_table[layers_table["roi"] == ALL_VERTICES]
    for _, row in overall.iterrows():
        print(f"   best {row['backbone']} layer over all vertices: {row['layer']} (median r {row['median r']:.3f})")

    _step(5, "figures and HTML report")
    manifest, outputs.report = out / "figures" / FIGURES_MANIFEST, out / "report.html"
    listed = [Path(p) for p in json.loads(manifest.read_text())] if manifest.is_file() else []
    if listed and _up_to_date([manifest, outputs.report, *listed], outputs.results):
        outputs.figures = listed
        print("   up to date with the results (reused)")
    else:
        outputs.figures = figures.write_figures(results, out / "figures")
        manifest.write_text(json.dumps([str(path) for path in outputs.figures]))
        write_report(
            table,
            outputs.figures,
            _model_provenance(results),
            outputs.report,
            title="nsd-featurestore demo: encoding models on simulated Algonauts data",
        )

    best = best_model(results)
    _step(6, f"submission of the best model ({best}) and its official score on the test images")
    archive = out / "submission" / submit.SUBMISSION_ZIP
    if _up_to_date([archive], outputs.results) and not check_submission(archive, data):
        outputs.submission = archive
        print("   up to date with the results and checked (reused)")
    else:
        outputs.submission = submit.write_test_submission(results, out / "submission")
    evaluation = evaluate_submission(outputs.submission, data, n_boot=preset.n_boot)
    outputs.test_score = evaluation.score.estimate
    print("   " + evaluation.format().replace("\n", "\n   "))
    print(f"   validation estimate of the same model (leaderboard): {table.loc[best, CHALLENGE_SCORE]:.1f}")
    outputs.seconds = time.perf_counter() - started
    print("\n" + outputs.describe(), flush=True)
    return outputs
