"""Pictures for people: label overlays of generator samples and of volumes (matplotlib, no display)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from brainseg_tf.labels import LabelSet  # noqa: E402


def label_colormap(num_classes: int) -> ListedColormap:
    """Transparent background, then distinct colours per class."""
    base = plt.get_cmap("tab10" if num_classes <= 11 else "tab20")
    colours = [(0, 0, 0, 0)] + [(*base(i % base.N)[:3], 0.45) for i in range(num_classes - 1)]
    return ListedColormap(colours)


def save_sample_overlays(
    inputs: np.ndarray, classes: np.ndarray, label_set: LabelSet, path: str | os.PathLike[str], title: str = ""
) -> Path:
    """Save a grid of 2D samples: the centre input channel in grey, class indices overlaid.

    Args:
        inputs: (N, H, W, C) float inputs; the centre channel is shown.
        classes: (N, H, W) class indices.
        label_set: names the classes in the legend.
        path: PNG to write (atomically).

    Returns:
        The written path.
    """
    if inputs.ndim != 4 or classes.shape != inputs.shape[:3]:
        raise ValueError(f"Expected inputs (N, H, W, C) and classes (N, H, W). Received: {inputs.shape}, {classes.shape}")
    count = inputs.shape[0]
    columns = min(count, 4)
    rows = -(-count // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows + 0.6), squeeze=False)
    cmap = label_colormap(label_set.num_classes)
    for n, axis in enumerate(axes.flat):
        axis.axis("off")
        if n < count:
            # Axis 0 of a RAS slice runs left->right: transpose so that it is the picture's x axis.
            axis.imshow(inputs[n, :, :, inputs.shape[-1] // 2].T, cmap="gray", origin="lower", vmin=0, vmax=1)
            axis.imshow(classes[n].T, cmap=cmap, origin="lower", vmin=0, vmax=label_set.num_classes - 1, interpolation="nearest")
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i)[:3]) for i in label_set.foreground_classes]
    figure.legend(handles, [label_set.names[i] for i in label_set.foreground_classes], loc="lower center", ncol=min(6, len(handles)), frameon=False)
    if title:
        figure.suptitle(title)
    return _save_figure(figure, Path(path))


def _save_figure(figure: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.part-{os.getpid()}.png")
    try:
        figure.savefig(temporary, dpi=100, bbox_inches="tight")
        os.replace(temporary, path)
    finally:
        plt.close(figure)
        temporary.unlink(missing_ok=True)
    return path
