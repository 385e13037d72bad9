"""The ``featurestore`` command: extract backbone activations into a Zarr store, list layers, inspect stores."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from featurestore.errors import DEBUG_ENV, USER_ERRORS, run_command

DESCRIPTION = """\
Extract a vision backbone's layer activations ONCE into a chunked Zarr store keyed by 0-based NSD id, then
read them lazily from Python with featurestore.open_features(store, backbone, layer).

An image that several subjects saw is extracted once; rerunning over the same ids costs nothing; a killed run
resumes where it stopped; a store made with other weights, preprocessing, dtype or reduction is refused.
Backbones come from catalog.yaml (add your own with --catalog my.yaml)."""

EPILOG = """\
examples:
  featurestore layers alexnet                       # extractable nodes (in-place ones marked)
  featurestore extract --backbone alexnet --images DATA_DIR --store features.zarr --dry-run
  featurestore extract --backbone alexnet --images DATA_DIR --store features.zarr
  featurestore extract --backbone alexnet --images DATA_DIR --store features.zarr --scheduler local:2
  featurestore extract --backbone ViT-B-32.openai --layers embedding --images nsd_stimuli.hdf5 \\
      --store s3://bucket/features.zarr --storage-option endpoint_url=http://127.0.0.1:9000
  featurestore extract --backbone alexnet --images NSD/nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5 \
      --subjects 1 2 --store features.zarr         # raw NSD: the images subjects 1 and 2 were shown
  featurestore ls features.zarr                     # backbones, layers, ids per layer, bytes
  featurestore info features.zarr alexnet           # provenance
  featurestore demo-data demo_data                  # a small offline dataset in the Algonauts 2023 layout

Run `featurestore COMMAND --help` for each command's options."""


def _storage_option(pair: str) -> tuple[str, str]:
    """One KEY=VALUE fsspec storage option (argparse reports a malformed one with the command's usage)."""
    key, sep, value = pair.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {pair!r}")
    return key, value


def _scheduler(value: str) -> str:
    """A --scheduler value: local:N or a scheduler address (argparse reports a malformed one with the usage)."""
    from featurestore.distributed import check_scheduler

    try:
        check_scheduler(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value


def _cmd_extract(args: argparse.Namespace) -> None:
    """Run (or plan, with --dry-run) one extraction and say what it did."""
    from featurestore.extract import extract

    report = extract(
        args.backbone,
        args.images,
        args.store,
        layers=args.layers,
        device=args.device,
        batch_size=args.batch_size,
        num_workers=args.workers,
        chunk_rows=args.chunk_rows,
        dtype=args.dtype,
        catalog=args.catalog,
        subjects=args.subjects,
        storage_options=dict(args.storage_option),
        dry_run=args.dry_run,
        progress=not args.no_progress,
        wait=args.wait,
        skip_bad_images=args.skip_bad_images,
        scheduler=args.scheduler,
        preprocess_on=args.preprocess_on,
    )
    for image in report.skipped_images:
        print(f"featurestore: skipped NSD id {image['nsd_id']}: {image['reason']}", file=sys.stderr)
    if not args.dry_run:
        plan = report.plan
        print(
            f"{plan.backbone}: {report.rows_computed} images through the model, {report.chunks_written} chunk(s) "
            f"written, {plan.rows.new_ids.size} new ids, {report.seconds:.1f} s -> {plan.store}"
        )


def _cmd_layers(args: argparse.Namespace) -> None:
    """Print every extractable layer with its output shape; mark in-place and default layers."""
    from featurestore.backbones import list_layers
    from featurestore.catalog import get_entry

    entry = get_entry(args.backbone, args.catalog)
    infos = list_layers(entry)
    width = max(len(info.name) for info in infos)
    print(
        f"{entry.name}: {len(infos)} layers ({entry.source} {entry.architecture}); "
        f"* = default layer, inplace = a later op modifies the output in place (read as a copy before it)"
        + (
            "; token map = ViT tokens, catalog `tokens:` keeps cls, mean or all"
            if any(i.token_map for i in infos)
            else ""
        )
    )
    for info in infos:
        mark = "*" if info.name in entry.layers else " "
        tokens = f"  tokens={info.tokens}" if info.tokens else "  token map" if info.token_map else ""
        reduce = tokens + (f"  reduce={entry.reduce[info.name]}" if info.name in entry.reduce else "")
        inplace = "  inplace" if info.inplace else ""
        print(f"{mark} {info.name:<{width}}  {str(tuple(info.shape)):<18}{inplace}{reduce}".rstrip())


def _cmd_ls(args: argparse.Namespace) -> None:
    """Print the store's summary table."""
    from featurestore.store import open_store

    table = open_store(args.store, "r", dict(args.storage_option)).summary()
    if table.empty:
        print(f"{args.store}: empty feature store")
        return
    table["reduce"] = table["reduce"].fillna("-")
    print(table.to_string(index=False))


def _cmd_info(args: argparse.Namespace) -> None:
    """Print a backbone's provenance as JSON."""
    from featurestore.store import open_store

    store = open_store(args.store, "r", dict(args.storage_option))
    print(json.dumps(store.provenance(args.backbone), indent=2, sort_keys=True))


def _cmd_demo_data(args: argparse.Namespace) -> None:
    """Write (or reuse) the offline demo dataset."""
    from featurestore.demo_data import make_demo_data

    path = make_demo_data(
        args.out,
        n_subjects=args.subjects,
        n_train=args.n_train,
        n_test=args.n_test,
        n_vertices=args.n_vertices,
        seed=args.seed,
    )
    print(f"demo dataset (Algonauts 2023 layout): {path}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``featurestore`` and its subcommands."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="featurestore", description=DESCRIPTION, epilog=EPILOG, formatter_class=formatter
    )
    debug_help = f"show the traceback of user errors too (or set {DEBUG_ENV}=1)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    parser.set_defaults(interrupted="interrupted")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # --debug is accepted after the command too; SUPPRESS keeps a subcommand from resetting the top-level flag
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)

    def store_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--storage-option",
            action="append",
            default=[],
            type=_storage_option,
            metavar="KEY=VALUE",
            help="fsspec option for a remote store, e.g. endpoint_url=http://host:9000 (repeatable)",
        )

    extract = commands.add_parser(
        "extract",
        parents=[common],
        help="extract layers of a backbone for every image into a store",
        formatter_class=formatter,
        description="Extract layer activations of a catalog backbone for every image of an Algonauts data dir, "
        "subject dir or NSD hdf5 file into a Zarr store (local path or fsspec URL). Ids already "
        "stored are skipped; an interrupted run resumes.",
    )
    extract.add_argument("--backbone", required=True, help="catalog entry name (see catalog.yaml)")
    extract.add_argument(
        "--layers", nargs="+", help="layers to store (default: the entry's layers; see `featurestore layers BACKBONE`)"
    )
    extract.add_argument(
        "--images", required=True, help="Algonauts 2023 data dir, one subject's dir, or nsd_stimuli.hdf5"
    )
    extract.add_argument("--store", required=True, help="feature store path or URL (created if missing)")
    extract.add_argument(
        "--subjects",
        nargs="+",
        help="subjects to take images from, e.g. 1 2 (default: all); with nsd_stimuli.hdf5 inside an NSD tree, the "
        "images the NSD design shows them (read from nsddata/experiments/nsd/nsd_expdesign.mat)",
    )
    extract.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    extract.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    extract.add_argument(
        "--workers",
        type=int,
        help="image-decoding worker processes (default: chosen from the device, the cores and the images pending; "
        "0, decoding inline, for small runs, where a worker's start-up costs more than it saves)",
    )
    extract.add_argument(
        "--preprocess-on",
        choices=["device", "pil"],
        help="where images are resized and normalised: on the model's device (workers only decode) or by PIL in "
        "the workers (default: the store's, else device on CUDA and pil on the CPU)",
    )
    extract.add_argument("--chunk-rows", type=int, help="rows per stored chunk (default: the store's, else 256)")
    extract.add_argument(
        "--dtype",
        choices=["float16", "float32"],
        help="storage dtype (default: the store's, else the entry's, float16)",
    )
    extract.add_argument("--catalog", nargs="+", default=[], help="user catalog YAML file(s)")
    extract.add_argument("--dry-run", action="store_true", help="print what would be written and stop")
    extract.add_argument(
        "--wait", action="store_true", help="wait for another writer of this backbone instead of failing"
    )
    extract.add_argument("--no-progress", action="store_true", help="no progress bar")
    extract.add_argument(
        "--scheduler",
        type=_scheduler,
        help="run each pending chunk as a task on a dask.distributed cluster: local:N starts N worker processes "
        "on this machine (one thread each), tcp://host:8786 joins a running scheduler (dask-jobqueue on SLURM: "
        "see the README); the store is the same as a single-process run's (default: this process)",
    )
    extract.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="skip unreadable images (recorded in the store, listed at the end) instead of stopping",
    )
    store_options(extract)
    extract.set_defaults(
        run=_cmd_extract, interrupted="interrupted; finished chunks are kept; rerun the same command to resume"
    )

    layers = commands.add_parser(
        "layers",
        parents=[common],
        help="list a backbone's extractable layers",
        description="List every extractable layer of a catalog backbone with its output "
        "shape; in-place layers and default layers are marked.",
    )
    layers.add_argument("backbone", help="catalog entry name")
    layers.add_argument("--catalog", nargs="+", default=[], help="user catalog YAML file(s)")
    layers.set_defaults(run=_cmd_layers)

    ls = commands.add_parser(
        "ls",
        parents=[common],
        help="summarise a store: backbones, layers, ids, bytes",
        description="One line per stored (backbone, layer): finished ids, feature shape, dtype and bytes on disk.",
    )
    ls.add_argument("store", help="feature store path or URL")
    store_options(ls)
    ls.set_defaults(run=_cmd_ls)

    info = commands.add_parser(
        "info",
        parents=[common],
        help="print a backbone's provenance",
        description="Print the provenance recorded for a backbone: catalog entry, weights "
        "sha256, preprocessing, dtype, chunking, library versions.",
    )
    info.add_argument("store", help="feature store path or URL")
    info.add_argument("backbone", help="backbone group name")
    store_options(info)
    info.set_defaults(run=_cmd_info)

    demo = commands.add_parser(
        "demo-data",
        parents=[common],
        help="write a small offline dataset in the Algonauts 2023 layout",
        description="Write (or reuse) a small dataset in the exact Algonauts 2023 layout "
        "from scikit-image / scikit-learn photos with simulated fMRI.",
    )
    demo.add_argument("out", help="output folder")
    demo.add_argument("--subjects", type=int, default=2, help="number of subjects (default: 2)")
    demo.add_argument("--n-train", type=int, default=120, help="training images per subject (default: 120)")
    demo.add_argument("--n-test", type=int, default=30, help="test images per subject (default: 30)")
    demo.add_argument(
        "--n-vertices", type=int, default=1500, help="challenge vertices of subj01's left hemisphere (default: 1500)"
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.set_defaults(run=_cmd_demo_data)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``featurestore``: 0 on success, 1 after a one-line user error, 130 after Ctrl-C."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="featurestore: %(message)s")
    return run_command(
        "featurestore", USER_ERRORS, lambda: args.run(args), debug=args.debug, interrupted=args.interrupted
    )


if __name__ == "__main__":
    sys.exit(main())
