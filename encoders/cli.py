"""The ``encoders`` command: fit a grid of encoding models, rank them, compare two, plot, submit, evaluate, run the
demo.

Long (about 450 lines) because of its help texts, which read like the README; each command's body is a few lines
that call the library.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from encoders.errors import EncodersError, InvalidArgumentError, check_output_folder
from encoders.splits import DEVKIT_SEED
from featurestore.errors import DEBUG_ENV

DESCRIPTION = """\
Fit and score fMRI encoding models (PCA + ridge with one alpha per vertex) on features read from a
feature store, for the Algonauts 2023 challenge data (or the built-in demo data).

Quick start (offline, about 3 minutes on 2 CPU cores):
  encoders demo --out demo_output

Typical workflow on the challenge data:
  featurestore extract --backbone alexnet --images algonauts_2023 --store features.zarr
  encoders fit --store features.zarr --data algonauts_2023 --backbones alexnet --out results
  encoders leaderboard results/results.nc
  encoders compare results/results.nc alexnet:features.5 alexnet:features.12
  encoders ensemble results/results.nc --method best-per-roi
  encoders partition results/results.nc      # after a fit with --join banded
  encoders plots results/results.nc --out figures
  encoders submit --results results/results.nc --out submission
  encoders check-submission submission/algonauts_2023_submission.zip --data algonauts_2023
  encoders evaluate submission/algonauts_2023_submission.zip --data algonauts_2023   # needs test_split/test_fmri

From the raw NSD release (the organisers' recipe, or the shared 1000 as test images):
  encoders prepare-nsd --nsd-dir NSD --subjects 1..8 --out algonauts_from_nsd --rsc
"""

FIT_HELP = """\
Every (backbone layer x encoder setting x subject) is one task: the subject's training images are split
90/10 as in the devkit notebook (--split-seed 4, its rand_seed; 5 reproduces the tutorial copies that set 5),
PCA is fitted on the training part, ridge picks an alpha per vertex by cross-validation (both hemispheres in
one fit), and validation r is scored per vertex and per ROI (median, with a bootstrap interval over validation
images). Where the data has the test split's noise ceiling, the challenge score is computed on the validation
images too: an estimate of the official score, which `encoders evaluate` computes on the test images. Finished
tasks are saved under OUT/combinations and reused when the command is run again with the same recipe and the
same data (a fingerprint of the fMRI, ROI masks and image names is part of each task's key); all results are
collected in OUT/results.nc, the leaderboard in OUT/leaderboard.csv and the best layer per ROI in
OUT/best_layers.csv. A model may join several feature spaces with +: PCA per space, the components side by side,
one ridge (--join concat), or one penalty per space and vertex (--join banded: BandedRidgeCV searches the penalty
ratios --ratios on the simplex times --alphas, and the validation R2 is partitioned between the spaces, refitting
without each space; see `encoders partition`).

examples:
  encoders fit --store features.zarr --data algonauts_2023 --backbones alexnet
  encoders fit --store features.zarr --data algonauts_2023 --models alexnet:features.5 alexnet:features.12 \\
      --pca 100 none --ridge kernel --subjects 1 2 --scheduler tcp://scheduler:8786
  encoders fit --store features.zarr --data algonauts_2023 --out results \\
      --models alexnet:features.5 alexnet:classifier.5 alexnet:features.5+alexnet:classifier.5 \\
      --join concat banded
"""

PARTITION_HELP = """\
The variance partition of a banded model (fitted with --join banded) per ROI, on the validation images: the R2 of
the joint model, the part of it each feature space explains uniquely (joint R2 minus the R2 of the model refitted
without that space), the part the spaces share (joint minus the sum of the unique parts), each space's share of
the joint R2 (its part of the prediction, himalaya's r2_score_split) and the winning space (largest share). ROI
values are means over the ROI's vertices, averaged over subjects and hemispheres. Saved in full as CSV.

examples:
  encoders fit --store features.zarr --data algonauts_2023 --out results --join banded \\
      --models alexnet:features.5+alexnet:classifier.5
  encoders partition results/results.nc
  encoders partition results/results.nc --model alexnet:features.5+alexnet:classifier.5 --rois V1v FFA-1 PPA
"""

SUBMIT_HELP = """\
Refit a model on all training images of each subject, predict the test images, write
OUT/subjXX/{lh,rh}_pred_test.npy and OUT/algonauts_2023_submission.zip, then check the zip. With --results
the encoder setting is the one the model was fitted with; the setting options apply to --model BACKBONE:LAYER.
When the data folder has the test fMRI (test_split/test_fmri, the post-challenge release), the official
challenge score of what was written is printed too.

examples:
  encoders submit --results results/results.nc --out submission
  encoders submit --model alexnet:features.12 --store features.zarr --data algonauts_2023 --pca 100 \\
      --out submission
"""


ENSEMBLE_HELP = """\
Combine the fitted models of a results file into one model: the best model per ROI (--method best-per-roi, ROIs of
--roi-class), per vertex (best-per-vertex), or per vertex the top --k models averaged with weights proportional to
their cross-validated r (top-k-average). The choice is made inside each subject's training rows: every member is
refitted on --inner-folds folds of them and its out-of-fold predictions give a cross-validated r per vertex (cached
under RESULTS_FOLDER/ensembles, so a second method costs only the final fits). The ensemble is then scored on the
validation rows, which took no part in the choice, and added to the results file as a model like any other
(ensemble:METHOD:DETAIL), so leaderboard, compare, plots and submit (which refits its members on all training
images) show it. Last, its gain over the best single model (median r over all vertices) with the paired bootstrap
interval over validation images.

examples:
  encoders ensemble results/results.nc --method best-per-roi
  encoders ensemble results/results.nc --method top-k-average --k 3
  encoders submit --results results/results.nc --model ensemble:best-per-roi --out submission
"""


EVALUATE_HELP = """\
Score a submission (zip or folder of subjXX/{lh,rh}_pred_test.npy) on the held-out test images, as the
Algonauts 2023 organisers do: per vertex, Pearson r over the test images; r < 0 counts as 0; the score is
100 * r^2 / noise ceiling (a ceiling of 0 becomes 1e-14), capped at 100. Printed per subject and hemisphere
(mean over vertices, median r) and overall: the mean over all vertices of all subjects and hemispheres (the
challenge's aggregate), beside the mean of the per-subject scores. Intervals resample the test images.

Needs subjXX/test_split/test_fmri/{lh,rh}_test_fmri.npy and test_split/noise_ceiling/{lh,rh}_noise_ceiling.npy
(fractions in [0, 1]) in the data folder, as in the post-challenge release.

examples:
  encoders evaluate submission/algonauts_2023_submission.zip --data algonauts_2023
  encoders evaluate submission --data algonauts_2023 --json scores.json
"""


def _split(text: str) -> list[str]:
    """'a,b' -> ['a', 'b'] (lets list options take commas or spaces)."""
    return [part for part in text.split(",") if part]


def _pca(text: str) -> int | None:
    if text.lower() in ("none", "0", "full"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--pca takes a number of components or 'none'; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--pca must be >= 1 (or 'none'); got {value}")
    return value


def _cv(text: str) -> int | str:
    from encoders.ridge import CLOSED_FORM_CV

    if text in CLOSED_FORM_CV:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--cv takes a number of folds, 'loo' or 'gcv'; got {text!r}") from None


def _alphas(text: str) -> list[float]:
    try:
        return [float(value) for value in _split(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--alphas takes comma-separated numbers, e.g. 1,10,100; got {text!r}"
        ) from None


class _RenamedOption(argparse.Action):
    """An option under its old name: stores the value and says, once, the name to use instead."""

    def __init__(self, *args: Any, new_name: str, **kwargs: Any) -> None:
        self.new_name = new_name
        super().__init__(*args, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(f"encoders: {option_string} is now {self.new_name}; the old name still works for now", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _add_setting_options(parser: argparse.ArgumentParser) -> None:
    from encoders.grid import DEFAULT_SETTING_ALPHAS
    from encoders.grid.settings import DEFAULT_BANDED_RATIOS, SPACE_JOINS

    group = parser.add_argument_group("encoder setting")
    group.add_argument(
        "--pca",
        type=_pca,
        nargs="+",
        default=[100],
        metavar="K",
        help="principal components before ridge, or 'none' for the full features; several values "
        "give several settings (default: 100)",
    )
    group.add_argument(
        "--ridge",
        choices=("primal", "kernel"),
        default="primal",
        help="ridge in feature space or on the linear kernel (use kernel with --pca none when "
        "features outnumber images; default: primal)",
    )
    group.add_argument(
        "--solver",
        dest="ridge",
        choices=("primal", "kernel"),
        action=_RenamedOption,
        new_name="--ridge",
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )
    group.add_argument(
        "--alphas",
        type=_alphas,
        default=list(DEFAULT_SETTING_ALPHAS),
        metavar="A,B,...",
        help="ridge penalties tried per vertex; 0 alone is least squares (default: 1e-2 ... 1e8, 11 values)",
    )
    group.add_argument(
        "--cv",
        type=_cv,
        default=5,
        help="folds for choosing alpha, 'loo' (exact leave-one-out) or 'gcv' (generalised "
        "cross-validation, the fastest) (default: 5)",
    )
    group.add_argument(
        "--join",
        choices=SPACE_JOINS,
        nargs="+",
        default=["concat"],
        help="how a model of several feature spaces (B:L1+B:L2) is fitted: concat (PCA per space, side by side, "
        "one ridge) or banded (the same columns, one penalty per space and vertex, and the validation variance "
        "partitioned between the spaces); both give two settings (default: concat)",
    )
    group.add_argument(
        "--ratios",
        type=int,
        default=DEFAULT_BANDED_RATIOS,
        metavar="S",
        help=f"banded join: penalty ratios searched on the simplex grid of step 1/S, each with every alpha "
        f"(default: {DEFAULT_BANDED_RATIOS}: 11 ratios for two spaces, 66 for three)",
    )


def _settings(args: argparse.Namespace) -> list[dict]:
    common = dict(ridge=args.ridge, alphas=args.alphas, cv=args.cv)
    return [
        dict(common, pca=pca, join=join, **({"ratios": args.ratios} if join == "banded" else {}))
        for join in dict.fromkeys(args.join)
        for pca in args.pca
    ]


def _lists(values: list[list[str]] | None) -> list[str] | None:
    return None if values is None else [item for group in values for item in group]


def _subjects_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--subjects",
        type=_split,
        nargs="+",
        metavar="N",
        help=f"subjects ({what}), e.g. 1 2 or subj01,subj02 (default: every subjXX folder)",
    )


def _build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="encoders", description=DESCRIPTION, formatter_class=formatter)
    debug_help = f"show the traceback of user errors too (or set {DEBUG_ENV}=1)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    # --debug after the command too; SUPPRESS keeps a subcommand from resetting the top-level flag
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fit = commands.add_parser(
        "fit",
        parents=[common],
        help="fit and score a grid of models (resumable)",
        description=FIT_HELP,
        formatter_class=formatter,
    )
    fit.add_argument("--store", required=True, help="feature store: local folder or URL (s3://bucket/features.zarr)")
    fit.add_argument(
        "--data",
        required=True,
        help="Algonauts 2023 data folder (with subjXX/ folders), or a raw NSD tree (prepared first into OUT/nsd_data "
        "as `encoders prepare-nsd` does)",
    )
    which = fit.add_mutually_exclusive_group()
    which.add_argument(
        "--backbones",
        type=_split,
        nargs="+",
        metavar="NAME",
        help="backbones whose stored layers are all fitted (default: every backbone in the store)",
    )
    which.add_argument(
        "--models",
        type=_split,
        nargs="+",
        metavar="BACKBONE:LAYER",
        help="explicit models, e.g. alexnet:features.5; join feature spaces with + to fit them as one model "
        "(PCA per space, side by side, one ridge): alexnet:features.5+alexnet:classifier.5",
    )
    fit.add_argument(
        "--layers", type=_split, nargs="+", metavar="LAYER", help="with --backbones: only these layers of each backbone"
    )
    _subjects_option(fit, "to fit")
    _add_setting_options(fit)
    fit.add_argument("--out", default="encoder_results", help="results folder (default: encoder_results)")
    fit.add_argument(
        "--scheduler",
        default=None,
        help="threads (default), processes, synchronous, or a dask.distributed scheduler address "
        "such as tcp://host:8786",
    )
    fit.add_argument("--workers", type=int, default=None, help="threads/processes for the local schedulers")
    fit.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples per ROI interval (default: 1000)")
    fit.add_argument(
        "--split-seed",
        type=int,
        default=DEVKIT_SEED,
        help=f"seed of the devkit 90/10 split (default: {DEVKIT_SEED}, the seed notebook's rand_seed; "
        "5 reproduces the tutorial copies that set 5)",
    )
    fit.add_argument("--quiet", action="store_true", help="no per-model progress lines")

    part = commands.add_parser(
        "partition",
        parents=[common],
        help="variance partition per ROI of a banded model",
        description=PARTITION_HELP,
        formatter_class=formatter,
    )
    part.add_argument("results", help="results.nc written by `encoders fit` (or its folder)")
    part.add_argument("--model", help="banded model id or unique prefix (default: the best banded model)")
    part.add_argument("--rois", type=_split, nargs="+", metavar="ROI", help="ROI rows (default: all)")
    part.add_argument("--csv", help="where to save the table (default: partition.csv next to the results)")

    board = commands.add_parser(
        "leaderboard",
        parents=[common],
        help="print and save the leaderboard of a results file",
        description="Rank the models of a results file by median r over all vertices, "
        "with per-ROI medians and bootstrap intervals.",
    )
    board.add_argument("results", help="results.nc written by `encoders fit` (or its folder)")
    board.add_argument(
        "--rois",
        type=_split,
        nargs="+",
        metavar="ROI",
        help="ROI columns to print (default: All vertices and the stream ROIs; the CSV has all)",
    )
    board.add_argument("--csv", help="where to save the full table (default: leaderboard.csv next to the results)")
    board.add_argument("--best-layers", action="store_true", help="also print the best layer per ROI and backbone")

    comp = commands.add_parser(
        "compare",
        parents=[common],
        help="paired bootstrap: is model B better than model A?",
        description="Refit models A and B on each subject's training split and compare "
        "their median validation r on the same bootstrap resamples of the "
        "validation images. A and B are model ids from the leaderboard; a "
        "unique prefix such as alexnet:features.5 is enough.",
    )
    comp.add_argument("results")
    comp.add_argument("a", metavar="A")
    comp.add_argument("b", metavar="B")
    comp.add_argument("--roi", default="All vertices", help="ROI (or ROI class) to compare (default: All vertices)")
    comp.add_argument("--hemisphere", choices=("lh", "rh"), help="one hemisphere only (default: both)")
    comp.add_argument("--n-boot", type=int, default=1000)
    comp.add_argument("--store", help="feature store (default: the one recorded in the results)")
    comp.add_argument("--data", help="data folder (default: the one recorded in the results)")

    ens = commands.add_parser(
        "ensemble",
        parents=[common],
        help="combine fitted models (best per ROI / vertex, top-k average), chosen inside the training rows",
        description=ENSEMBLE_HELP,
        formatter_class=formatter,
    )
    ens.add_argument("results", help="results.nc written by `encoders fit` (or its folder); the ensemble is added")
    ens.add_argument(
        "--method", required=True, choices=("best-per-roi", "best-per-vertex", "top-k-average"), help="how to combine"
    )
    ens.add_argument("--k", type=int, default=3, help="models averaged per vertex by top-k-average (default: 3)")
    ens.add_argument(
        "--roi-class", default="streams", help="ROI class whose ROIs best-per-roi chooses for (default: streams)"
    )
    ens.add_argument(
        "--models", type=_split, nargs="+", metavar="MODEL", help="member models (default: every fitted model)"
    )
    ens.add_argument(
        "--inner-folds", type=int, default=5, help="folds of the training rows for the choice (default: 5)"
    )
    ens.add_argument("--n-boot", type=int, default=1000, help="resamples of the paired bootstrap (default: 1000)")
    ens.add_argument("--store", help="feature store (default: the one recorded in the results)")
    ens.add_argument("--data", help="data folder (default: the one recorded in the results)")
    ens.add_argument("--quiet", action="store_true", help="no progress bar")

    sub = commands.add_parser(
        "submit",
        parents=[common],
        help="predict the test images and write a checked submission zip",
        description=SUBMIT_HELP,
        formatter_class=formatter,
    )
    sub.add_argument("--results", help="results.nc: take the model (default: the best) and its setting from it")
    sub.add_argument(
        "--model",
        help="model id from the results (an ensemble too), or BACKBONE:LAYER (or B:L1+B:L2) with --store/--data",
    )
    sub.add_argument("--store", help="feature store (default: the one recorded in the results)")
    sub.add_argument("--data", help="data folder (default: the one recorded in the results)")
    _subjects_option(sub, "to predict")
    _add_setting_options(sub)
    sub.add_argument("--out", default="submission", help="output folder (default: submission)")

    check = commands.add_parser(
        "check-submission",
        parents=[common],
        help="check a submission zip against the data",
        description="List every problem of a submission zip or folder (missing subjects "
        "or files, wrong shape or dtype, NaN/inf, files that are not .npy "
        "arrays, an extra parent folder); exit status 1 when there is any.",
    )
    check.add_argument("zip", metavar="SUBMISSION", help="submission zip (or folder of subjXX/ folders)")
    check.add_argument("--data", required=True, help="Algonauts 2023 data folder the predictions are for")
    _subjects_option(check, "expected in the zip")

    evaluate = commands.add_parser(
        "evaluate",
        parents=[common],
        help="score a submission on the test images (the official score)",
        description=EVALUATE_HELP,
        formatter_class=formatter,
    )
    evaluate.add_argument("submission", help="submission zip, or a folder holding subjXX/{lh,rh}_pred_test.npy")
    evaluate.add_argument(
        "--data", required=True, help="data folder with test_split/test_fmri and test_split/noise_ceiling per subject"
    )
    _subjects_option(evaluate, "to score; each must be in the submission")
    evaluate.add_argument("--json", metavar="FILE", help="also write the scores as JSON to FILE")
    evaluate.add_argument(
        "--n-boot",
        type=int,
        default=1000,
        help="bootstrap resamples of the test images for the intervals (default: 1000)",
    )

    plots = commands.add_parser(
        "plots",
        parents=[common],
        help="figures of a results file",
        description="Accuracy on the brain surface (PNG + interactive HTML), an ROI on "
        "the surface, median r per ROI LH vs RH, a layer x ROI heatmap and one "
        "image's fMRI response; for the best banded model (--join banded), the winning feature space per vertex "
        "on the surface and a stacked bar of unique and shared R2 per ROI.",
    )
    plots.add_argument("results")
    plots.add_argument("--out", default="figures", help="output folder (default: figures)")
    plots.add_argument("--model", help="model for the surface and ROI figures (default: the best)")
    plots.add_argument("--subject", type=int, help="subject for the surface figures (default: the first)")
    plots.add_argument("--data", help="data folder (default: the one recorded in the results)")

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="the whole workflow offline on built-in demo data",
        description="Build demo data in the Algonauts 2023 layout, extract features of two "
        "backbones, fit the grid over their layers and both subjects, print the "
        "leaderboard next to the simulation's noise ceiling, and write figures, "
        "an HTML report and a checked submission zip. A rerun reuses everything "
        "already in --out.",
    )
    demo.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    demo.add_argument(
        "--backbones",
        type=_split,
        nargs="+",
        metavar="NAME",
        help="catalog backbones (default: alexnet.untrained ViT-B-32.untrained; pretrained ones such "
        "as alexnet need their weights cached or network access)",
    )
    demo.add_argument(
        "--size",
        choices=("tiny", "default"),
        default="default",
        help="default: 150 train / 40 test images per subject (a few minutes); tiny: a smoke test",
    )
    _add_prepare_nsd(commands, common, formatter)
    return parser


PREPARE_NSD_HELP = """\
Build Algonauts 2023 folders from the raw NSD release, as the organisers did (challenge_data_preparation.py of
gifale95/algonauts_2023): single-trial betas on fsaverage read one session at a time, z-scored per session and
vertex, vertices NaN in any session dropped, repeats averaged; the last 3 sessions present are held out (test
images shown only there, minus the shared images except, for a subject with every session, those with all 3
trials held out); the noise ceiling from ncsnr with the norm term of the test images' repeat counts; ROI masks
mapped from the subject's surface to fsaverage; PNG images named train-0001_nsd-00013.png from the hdf5.

Each subject is written to a temporary folder and renamed to OUT/subjXX when complete: a rerun skips the
subjects already there and redoes an interrupted one. Memory: one session (about 1 GB) plus the result
(4 bytes x images x vertices, about 1.6 GB for a full subject). --dry-run reads no betas.

examples:
  encoders prepare-nsd --nsd-dir /data/NSD --subjects 1 2 --out algonauts_from_nsd --dry-run
  encoders prepare-nsd --nsd-dir /data/NSD --subjects 1..8 --out algonauts_from_nsd --rsc
  encoders fit --store features.zarr --data algonauts_from_nsd --backbones alexnet
"""


def _nsd_subjects(text: str) -> list[str]:
    """'1..8' -> ['1', ..., '8']; anything else as for --subjects."""
    if ".." in text:
        first, _, last = text.partition("..")
        if first.isdigit() and last.isdigit():
            return [str(number) for number in range(int(first), int(last) + 1)]
        raise argparse.ArgumentTypeError(f"--subjects range must look like 1..8; got {text!r}")
    return _split(text)


def _add_prepare_nsd(commands: Any, common: argparse.ArgumentParser, formatter: type) -> None:
    prepare = commands.add_parser(
        "prepare-nsd",
        parents=[common],
        help="write Algonauts 2023 folders from the raw NSD release (resumable)",
        description=PREPARE_NSD_HELP,
        formatter_class=formatter,
    )
    prepare.add_argument("--nsd-dir", required=True, help="NSD root folder (holding nsddata, nsddata_betas, ...)")
    prepare.add_argument(
        "--subjects", type=_nsd_subjects, nargs="+", required=True, metavar="N", help="subjects 1..8, e.g. 1 2 or 1..8"
    )
    prepare.add_argument("--out", required=True, help="output folder (subjXX folders are created in it)")
    prepare.add_argument(
        "--test",
        choices=("challenge", "shared1000"),
        default="challenge",
        help="held-out images: the organisers' split (default) or the shared images each subject saw",
    )
    prepare.add_argument(
        "--rsc",
        action="store_true",
        help="all vertices = nsdgeneral plus the nsdgeneralRSC label, as the challenge (default: nsdgeneral)",
    )
    prepare.add_argument(
        "--require-rois",
        action="store_true",
        help="stop with an error when a subject lacks ROI labels (default: write the all-vertices masks, warn)",
    )
    prepare.add_argument("--dry-run", action="store_true", help="say what would be read and written, and how many GB")
    prepare.add_argument("--quiet", action="store_true", help="no progress bars")


def _algonauts_data(data: str, out: str, subjects: list[str] | None) -> str:
    """``--data`` as an Algonauts folder: a raw NSD tree is first prepared (resumable) into OUT/nsd_data."""
    from nsd.tree import is_raw_nsd, list_nsd_subjects

    if not is_raw_nsd(data):
        return data
    from nsd.prepare import prepare_nsd

    prepared = Path(out) / "nsd_data"
    prepare_nsd(data, subjects or list_nsd_subjects(data), prepared)
    print(
        f"raw NSD {data}: prepared with the organisers' recipe (nsdgeneral, challenge split) in {prepared}; "
        "run `encoders prepare-nsd` for other choices and pass its --out as --data"
    )
    return str(prepared)


def _prepare_nsd(args: argparse.Namespace) -> int:
    from nsd.prepare import prepare_nsd

    if not args.dry_run:
        check_output_folder(args.out, "--out")
    plan = prepare_nsd(
        args.nsd_dir,
        _lists(args.subjects),
        args.out,
        roi=("nsdgeneral", "nsdgeneralRSC") if args.rsc else "nsdgeneral",
        test=args.test,
        require_rois=args.require_rois,
        dry_run=args.dry_run,
        progress=not args.quiet,
    )
    if args.dry_run:
        print(plan.describe())
    else:
        written = ", ".join(f"subj{number:02d}" for number in plan.todo) or "nothing new"
        skipped = ", ".join(f"subj{number:02d}" for number in plan.done)
        print(f"prepared {written} in {args.out}" + (f" (already there: {skipped})" if skipped else ""))
    return 0


def _fit(args: argparse.Namespace) -> int:
    from encoders.grid import fit_grid, parse_spaces
    from encoders.leaderboard import best_layers, format_leaderboard, leaderboard

    check_output_folder(args.out, "--out")
    models, backbones, layers = _lists(args.models), _lists(args.backbones), _lists(args.layers)
    if layers is not None:
        if backbones is None:
            raise InvalidArgumentError("--layers needs --backbones (or name BACKBONE:LAYER pairs with --models)")
        models, backbones = [(b, layer) for b in backbones for layer in layers], None
    elif models is not None:
        models = [parse_spaces(m) for m in models]
    results = fit_grid(
        args.store,
        _algonauts_data(args.data, args.out, _lists(args.subjects)),
        models=models,
        backbones=backbones,
        subjects=_lists(args.subjects),
        settings=_settings(args),
        out=args.out,
        split_seed=args.split_seed,
        n_boot=args.n_boot,
        scheduler=args.scheduler,
        n_workers=args.workers,
        progress=not args.quiet,
    )
    table = leaderboard(results)
    out = Path(args.out)
    table.to_csv(out / "leaderboard.csv")
    best_layers(results).to_csv(out / "best_layers.csv", index=False)
    print(format_leaderboard(table))
    print(
        f"\nresults: {out / 'results.nc'}\nleaderboard: {out / 'leaderboard.csv'}\n"
        f"best layer per ROI: {out / 'best_layers.csv'}"
    )
    return 0


def _leaderboard(args: argparse.Namespace) -> int:
    from encoders.grid import RESULTS_FILE, load_results
    from encoders.leaderboard import best_layers, format_leaderboard, leaderboard

    results = load_results(args.results)
    table = leaderboard(results)
    path = Path(args.results)
    csv = Path(args.csv) if args.csv else (path if path.is_dir() else path.parent) / "leaderboard.csv"
    table.to_csv(csv)
    print(format_leaderboard(table, rois=_lists(args.rois)))
    if args.best_layers:
        layers = best_layers(results).to_string(index=False, float_format=lambda v: f"{v:.3f}")
        print("\nbest layer per ROI:\n" + layers)
    print(f"\nsaved {csv} (every ROI; from {path / RESULTS_FILE if path.is_dir() else path})")
    return 0


def _partition(args: argparse.Namespace) -> int:
    from encoders.grid import load_results
    from encoders.leaderboard import format_partition, partition_table

    table = partition_table(load_results(args.results), args.model, rois=_lists(args.rois))
    path = Path(args.results)
    csv = Path(args.csv) if args.csv else (path if path.is_dir() else path.parent) / "partition.csv"
    table.to_csv(csv)
    print(format_partition(table))
    print(f"\nsaved {csv}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from encoders.grid import load_results
    from encoders.leaderboard import compare

    results = load_results(args.results)
    print(
        compare(
            results,
            args.a,
            args.b,
            roi=args.roi,
            hemisphere=args.hemisphere,
            n_boot=args.n_boot,
            store=args.store,
            data_dir=args.data,
        )
    )
    return 0


def _ensemble(args: argparse.Namespace) -> int:
    from encoders.ensemble import ensemble_cache_dir, fit_ensemble
    from encoders.grid import RESULTS_FILE, load_results
    from encoders.grid.results import write_atomic
    from encoders.leaderboard import compare, format_leaderboard, leaderboard

    path = Path(args.results)
    path = path / RESULTS_FILE if path.is_dir() else path
    results = fit_ensemble(
        load_results(path),
        args.method,
        k=args.k,
        roi_class=args.roi_class,
        members=_lists(args.models),
        inner_folds=args.inner_folds,
        store=args.store,
        data_dir=args.data,
        cache_dir=ensemble_cache_dir(path),
        progress=not args.quiet,
    )
    write_atomic(results, path)
    table = leaderboard(results)
    table.to_csv(path.parent / "leaderboard.csv")
    print(format_leaderboard(table))
    model = results["model"].values[-1]
    singles = table[(table["backbone"] != "ensemble") & table.index.isin(results["model"].values)]
    best = str(singles["All vertices"].idxmax())
    comparison = compare(results, best, model, n_boot=args.n_boot, store=args.store, data_dir=args.data)
    gain = comparison.mean.difference
    print(
        f"\n{model} against the best single model {best}, median r over all vertices of both hemispheres (mean "
        f"over subjects): {comparison.mean.b.estimate:.4f} vs {comparison.mean.a.estimate:.4f}, gain "
        f"{gain.estimate:+.4f} [{gain.low:+.4f}, {gain.high:+.4f}] (paired bootstrap over validation images, "
        f"{gain.level:.0%})\n(the best single model is picked on the same validation rows, which flatters it)"
    )
    print(f"saved {path} and {path.parent / 'leaderboard.csv'}")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from encoders.challenge import has_test_split
    from encoders.evaluate import evaluate_submission
    from encoders.grid import EncoderSetting, load_results, predict_test
    from encoders.submit import write_checked_submission, write_test_submission

    subjects = _lists(args.subjects)
    if not args.results and not (args.model and args.store and args.data):
        raise InvalidArgumentError("give --results RESULTS, or --model BACKBONE:LAYER with --store and --data")
    if not args.results and len(args.pca) != 1:
        raise InvalidArgumentError(f"submit fits one model; got {len(args.pca)} --pca values")
    check_output_folder(args.out, "--out")  # before the refit, which takes long
    if args.results:
        results = load_results(args.results)
        data_dir = args.data or results.attrs["data_dir"]
        archive = write_test_submission(
            results, args.out, model=args.model, store=args.store, data_dir=data_dir, subjects=subjects
        )
    else:
        data_dir = args.data
        setting = EncoderSetting.from_value(_settings(args)[0])
        predictions = predict_test(args.store, data_dir, args.model, setting=setting, subjects=subjects)
        archive = write_checked_submission(predictions, args.out, data_dir, subjects)
    print(f"submission: {archive} (checked: no problems)")
    if has_test_split(data_dir, subjects):
        print(evaluate_submission(archive, data_dir, subjects=subjects).format())
    else:
        print(
            f"(no test_split/test_fmri and noise_ceiling in {data_dir}: the official score needs the "
            "post-challenge release; the leaderboard's validation figures are estimates)"
        )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import json

    from encoders.evaluate import evaluate_submission

    evaluation = evaluate_submission(args.submission, args.data, subjects=_lists(args.subjects), n_boot=args.n_boot)
    print(evaluation.format())
    if args.json:
        Path(args.json).write_text(json.dumps(evaluation.to_dict(), indent=1) + "\n")
        print(f"saved {args.json}")
    return 0


def _check_submission(args: argparse.Namespace) -> int:
    from encoders.submission import check_submission

    problems = check_submission(args.zip, args.data, _lists(args.subjects))
    if problems:
        print(f"{args.zip}: {len(problems)} problem(s)", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"{args.zip}: OK")
    return 0


def _plots(args: argparse.Namespace) -> int:
    from encoders.figures import write_figures
    from encoders.grid import load_results

    figures = write_figures(
        load_results(args.results), args.out, model=args.model, subject=args.subject, data_dir=args.data
    )
    print("\n".join(str(path) for path in figures))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from encoders.demo import DEMO_BACKBONES, run_demo

    run_demo(args.out, _lists(args.backbones) or DEMO_BACKBONES, size=args.size)
    return 0


# what Ctrl-C leaves behind, per command (one line instead of a traceback)
INTERRUPTED = {
    "fit": "interrupted; finished combinations are kept under --out/combinations: rerun the same command to resume",
    "demo": "interrupted; what is finished in --out is kept: rerun the same command to resume",
    "submit": "interrupted; nothing was written unless the submission zip was complete",
    "prepare-nsd": "interrupted; finished subjects are kept in --out: rerun the same command to resume",
    "ensemble": "interrupted; the results file is unchanged, the members' cross-validated r finished so far are "
    "cached next to it: rerun the same command to resume",
}

COMMANDS = {
    "fit": _fit,
    "leaderboard": _leaderboard,
    "partition": _partition,
    "compare": _compare,
    "ensemble": _ensemble,
    "submit": _submit,
    "check-submission": _check_submission,
    "evaluate": _evaluate,
    "plots": _plots,
    "demo": _demo,
    "prepare-nsd": _prepare_nsd,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``encoders``: the command's status, 1 after a one-line user error, 130 after Ctrl-C."""
    from featurestore.errors import USER_ERRORS, run_command

    args = _build_parser().parse_args(argv)
    return run_command(
        f"encoders {args.command}",
        (EncodersError, *USER_ERRORS),
        lambda: COMMANDS[args.command](args),
        debug=args.debug,
        interrupted=INTERRUPTED.get(args.command, "interrupted"),
    )


if __name__ == "__main__":
    sys.exit(main())
