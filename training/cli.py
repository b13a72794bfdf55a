"""Command line of `python -m training`: parse, configure logging, call one library function per command."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from pathlib import Path

import yaml
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from brainseg_tf.config import Config, config_from_command_line
from brainseg_tf.errors import BrainsegError
from brainseg_tf.runtime import import_tensorflow_quietly

logger = logging.getLogger("training")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser with one subcommand per job."""
    parser = argparse.ArgumentParser(prog="python -m training", description="Prepare data and train brainseg-tf models.")
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("config", help="print the effective configuration as YAML (every default, then overrides)")
    _add_common(show)
    prepare = commands.add_parser("prepare-data", help="build (or reuse) the HDF5 cache and preview generator samples")
    _add_common(prepare)
    prepare.add_argument("--preview", type=Path, help="write a PNG of generator samples with labels overlaid")
    prepare.add_argument("--rebuild", action="store_true", help="rebuild the cache even if it is current")
    multiclass = commands.add_parser("multiclass", help="train the softmax network over every class of the label set")
    single = commands.add_parser("single-class", help="train one sigmoid network for one class")
    single.add_argument("--label", required=True, metavar="NAME", help="class name, e.g. 'gray matter'")
    ensemble = commands.add_parser("ensemble", help="train one sigmoid network per foreground class, then bundle them")
    ensemble.add_argument("--label", dest="labels", action="append", metavar="NAME",
                          help="train only this member (repeatable); the ensemble bundle is written once all members exist")
    default_runs = {multiclass: "multiclass", single: "single-class-<label>", ensemble: "ensemble"}
    for command, default_run in default_runs.items():
        _add_common(command)
        command.add_argument("--run-dir", type=Path, metavar="DIR",
                             help="run folder (checkpoints, logs); rerunning with the same folder resumes. "
                                  f"Default: <training.output_dir>/{default_run}")
        command.add_argument("--bundle", type=Path, metavar="DIR", help="where the final bundle goes (default: <run-dir>/bundle)")
    reexport = commands.add_parser("reexport", help="rewrite bundles' SavedModels from their model.keras with the current exporter "
                                                    "(weights and training record kept)")
    reexport.add_argument("bundles", type=Path, nargs="+", metavar="BUNDLE", help="model or ensemble bundle folder")
    reexport.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    reexport.set_defaults(config=None, overrides=[], quick=False)
    attach = commands.add_parser("attach-extractor", help="put a brain-extractor bundle (single-class, label brain) into segmenter "
                                                          "bundles, so they take full heads (networks and training record kept)")
    attach.add_argument("--extractor", type=Path, required=True, metavar="DIR", help="the brain-extractor bundle")
    attach.add_argument("bundles", type=Path, nargs="+", metavar="BUNDLE", help="multi-class or ensemble bundle folder")
    attach.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    attach.set_defaults(config=None, overrides=[], quick=False)
    return parser


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML file overriding the defaults in brainseg_tf/config.py")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set generator.batch_size=8 (repeatable)")
    parser.add_argument("--quick", action="store_true", help="small setting for tests and quick looks (5 subjects at 3 mm)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def show_config(args: argparse.Namespace, config: Config) -> None:
    """Print the effective configuration: a starting point for a --config file."""
    print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")


def prepare_data(args: argparse.Namespace, config: Config) -> None:
    """Build the cache; optionally save a preview of generator samples."""
    from brainseg_tf.datasets import build_cache, read_info

    started = time.perf_counter()
    with contextlib.closing(SubjectBar()) as bar, (logging_redirect_tqdm() if bar.enabled else contextlib.nullcontext()):
        path = build_cache(config, rebuild=args.rebuild, progress=bar)
    info = read_info(path)
    counts = ", ".join(f"{len(ids)} {split}" for split, ids in info.splits.items())
    logger.info("dataset ready in %.1f s: %s (%s)", time.perf_counter() - started, path, counts)
    if args.preview:
        from brainseg_tf.preview import save_generator_preview

        save_generator_preview(path, config, args.preview)
        logger.info("generator preview: %s", args.preview)


class SubjectBar:
    """The dataset build's progress as a tqdm bar, open while subjects are built (a reused cache shows none).

    Disabled when stdout is not a terminal, so CI logs stay plain lines; while enabled, `prepare-data`
    prints the log lines above the bar.
    """

    def __init__(self) -> None:
        self.bar: tqdm | None = None
        self.enabled = sys.stdout.isatty()

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, desc="subjects", unit="subject", disable=not self.enabled)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def multiclass(args: argparse.Namespace, config: Config) -> None:
    """Train (or resume) the softmax network."""
    from training.run import train_network

    train_network(config, "multiclass", run_dir=args.run_dir, bundle_dir=args.bundle)


def single_class(args: argparse.Namespace, config: Config) -> None:
    """Train (or resume) the sigmoid network of one class."""
    from training.run import train_network

    train_network(config, "single_class", label=args.label, run_dir=args.run_dir, bundle_dir=args.bundle)


def ensemble(args: argparse.Namespace, config: Config) -> None:
    """Train (or resume) the ensemble's members, or the named ones, and bundle them when all exist."""
    from training.run import train_ensemble

    train_ensemble(config, labels=args.labels, run_dir=args.run_dir, bundle_dir=args.bundle)


def reexport(args: argparse.Namespace, config: Config) -> None:
    """Rewrite each bundle's SavedModel(s) from its own verified model.keras."""
    from brainseg_tf.bundle.reexport import reexport_bundle

    for bundle in args.bundles:
        reexport_bundle(bundle)


def attach_extractor(args: argparse.Namespace, config: Config) -> None:
    """Attach the brain extractor to each segmenter bundle (each verified, staged and swapped in atomically)."""
    from brainseg_tf.bundle.extractor import attach_brain_extractor

    for bundle in args.bundles:
        attach_brain_extractor(bundle, args.extractor)


TENSORFLOW_COMMANDS = ("prepare-data", "multiclass", "single-class", "ensemble", "reexport")
"""Commands that run TensorFlow in this process."""

COMMANDS = {"config": show_config, "prepare-data": prepare_data, "multiclass": multiclass, "single-class": single_class, "ensemble": ensemble,
            "reexport": reexport, "attach-extractor": attach_extractor}


def main(argv: list[str] | None = None) -> int:
    """Run one command; return the process exit status (0 ok, 1 a user-facing error)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        if args.command in TENSORFLOW_COMMANDS:
            import_tensorflow_quietly()  # its native start-up notices would bury one-line errors on stderr
        COMMANDS[args.command](args, config_from_command_line(args.config, args.overrides, args.quick))
    except BrainsegError as error:
        logger.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
