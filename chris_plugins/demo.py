"""Run both plugins on the embedded MNI152 T1 as ChRIS would, then score them against the embedded tissue labels.

``python -m chris_plugins.demo [--output-dir outputs/demo]``: writes the T1 (from nilearn's package
data, no download) to ``<output-dir>/incoming``, calls ``<python> <selfpath>/<selfexec> incoming
outgoing-<plugin>`` for each plugin, then prints where the outputs are and the Dice of each label
map against the template's own tissue labels.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

from brainseg_tf.datasets import embedded
from brainseg_tf.io import load_label_map, save_volume
from brainseg_tf.labels import TISSUE
from brainseg_tf.scoring import dice_scores
from chris_plugins.descriptors import PLUGINS

T1_NAME = "mni152_t1"


def write_t1(folder: Path) -> tuple[Path, np.ndarray]:
    """The MNI152 T1 as a NIfTI file in ``folder``, and its reference tissue classes on the same grid."""
    template = embedded.load_template(1.0)
    path = save_volume(template.image, folder / f"{T1_NAME}.nii.gz")
    return path, embedded.tissue_labels(template.gray_matter, template.white_matter, template.brain_mask)


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
    _, reference = write_t1(incoming)
    rows, status = [], 0
    for plugin in PLUGINS:
        outgoing = args.output_dir / f"outgoing-{plugin.name}"
        code = run_plugin(plugin.module, incoming, outgoing)
        status = status or code
        if code == 0:
            labels = load_label_map(outgoing / f"{T1_NAME}_labels.nii.gz")
            rows.append((plugin.name, outgoing, dice_scores(labels.array, reference, TISSUE.foreground_classes)))
    _print_summary(rows)
    return status


def _print_summary(rows: list[tuple[str, Path, dict[int, float]]]) -> None:
    print("\nDice against the MNI152 template's own tissue labels (clean template: out of the training distribution,")
    print("CSF especially; held-out synthetic subjects are in docs/comparison.md):")
    names = [TISSUE.names[c] for c in TISSUE.foreground_classes]
    print(f"  {'plugin':<26}" + "".join(f"{n:>14}" for n in names))
    for name, _, scores in rows:
        print(f"  {name:<26}" + "".join(f"{scores[c]:>14.3f}" for c in TISSUE.foreground_classes))
    for name, outgoing, _ in rows:
        print(f"\n{name}:")
        for suffix in ("labels.nii.gz", "volumes.csv", "volumes.json", "qc.png"):
            print(f"  {outgoing / f'{T1_NAME}_{suffix}'}")


if __name__ == "__main__":
    sys.exit(main())
