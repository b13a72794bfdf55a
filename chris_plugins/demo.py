"""Run both plugins on a full head and the MNI152 T1 as ChRIS would, then score them against their references.

``python -m chris_plugins.demo [--output-dir outputs/demo]``: writes two T1 volumes to
``<output-dir>/incoming``: a synthetic full head (skull, scalp, face, neck; the first held-out case of
the realistic-heads suite, `evaluation.head_variants`, grown around a test-split brain) and the
skull-stripped MNI152 T1 (nilearn's package data, no download). Then calls ``<python>
<selfpath>/<selfexec> incoming outgoing-<plugin>`` for each plugin, and prints where the outputs are,
the Dice of each label map against the references (brain and tissue classes) and each QC verdict.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from brainseg_tf.config import Config
from brainseg_tf.datasets import embedded
from brainseg_tf.io import load_label_map, save_volume
from brainseg_tf.labels import TISSUE
from brainseg_tf.scoring import dice_scores
from chris_plugins.descriptors import PLUGINS

T1_NAME = "mni152_t1"
HEAD_NAME = "synthetic_full_head"


def write_t1(folder: Path) -> tuple[Path, np.ndarray]:
    """The MNI152 T1 as a NIfTI file in ``folder``, and its reference tissue classes on the same grid."""
    template = embedded.load_template(1.0)
    path = save_volume(template.image, folder / f"{T1_NAME}.nii.gz")
    return path, embedded.tissue_labels(template.gray_matter, template.white_matter, template.brain_mask)


def write_full_head(folder: Path) -> tuple[Path, np.ndarray]:
    """A held-out synthetic full head (as-is) in ``folder``, and its reference tissue classes on the same grid."""
    from evaluation.head_variants import head_cases

    case = next(head_cases(Config(), 1, variants=("as-is",)))
    path = save_volume(case.image, folder / f"{HEAD_NAME}.nii.gz")
    return path, np.asarray(case.tissue.array)


def run_plugin(selfexec: str, inputdir: Path, outputdir: Path) -> int:
    """``<python> <selfpath>/<selfexec> INPUTDIR OUTPUTDIR`` with this Python's bin folder as selfpath."""
    command = [sys.executable, str(Path(sys.executable).parent / selfexec), str(inputdir), str(outputdir)]
    print(f"$ {' '.join(command)}", flush=True)
    return subprocess.run(command, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chris_plugins.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/demo"))
    args = parser.parse_args(argv)
    incoming = args.output_dir / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    references = {HEAD_NAME: write_full_head(incoming)[1], T1_NAME: write_t1(incoming)[1]}
    rows, status = [], 0
    for plugin in PLUGINS:
        outgoing = args.output_dir / f"outgoing-{plugin.name}"
        code = run_plugin(plugin.module, incoming, outgoing)
        status = status or code
        if code == 0:
            for name, reference in references.items():
                rows.append((plugin.name, name, outgoing, *_scores(outgoing, name, reference)))
    _print_summary(rows)
    return status


def _scores(outgoing: Path, name: str, reference: np.ndarray) -> tuple[dict[str, float], str]:
    """Dice of brain (labels > 0) and of each tissue class against the reference, and the QC line of the volumes JSON."""
    labels = np.asarray(load_label_map(outgoing / f"{name}_labels.nii.gz").array)
    scores = {"brain": dice_scores(labels > 0, reference > 0, (1,))[1]}
    scores.update({TISSUE.names[c]: value for c, value in dice_scores(labels, reference, TISSUE.foreground_classes).items()})
    qc = json.loads((outgoing / f"{name}_volumes.json").read_text(encoding="utf-8")).get("qc") or {}
    reasons = "; ".join(reason["code"] for reason in qc.get("reasons", []))
    return scores, f"{qc.get('status', '-')}" + (f" ({reasons})" if reasons else "")


def _print_summary(rows: list[tuple[str, str, Path, dict[str, float], str]]) -> None:
    print("\nDice against each volume's reference (the full head: a held-out synthetic head, its own labels;")
    print("the MNI152 T1: the template's tissue labels, clean and skull-stripped; see docs/comparison.md):")
    names = ["brain", *(TISSUE.names[c] for c in TISSUE.foreground_classes)]
    print(f"  {'plugin':<26}{'volume':<22}" + "".join(f"{n:>14}" for n in names) + "  QC")
    for plugin, volume, _, scores, qc in rows:
        print(f"  {plugin:<26}{volume:<22}" + "".join(f"{scores[n]:>14.3f}" for n in names) + f"  {qc}")
    for plugin, volume, outgoing, _, _ in rows:
        print(f"\n{plugin}, {volume}:")
        for suffix in ("labels.nii.gz", "volumes.csv", "volumes.json", "qc.png"):
            print(f"  {outgoing / f'{volume}_{suffix}'}")


if __name__ == "__main__":
    sys.exit(main())
