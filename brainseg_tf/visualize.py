"""Pictures for people: label overlays of generator samples and of volumes.

Figures are built with matplotlib's object API (`matplotlib.figure.Figure`), never through pyplot,
so the library neither needs a display nor changes the backend a notebook or application chose.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
import numpy as np
from matplotlib.colors import ListedColormap

from brainseg_tf.geometry import reorient
from brainseg_tf.io import Volume
from brainseg_tf.labels import LabelSet

PLANES = ("axial", "coronal", "sagittal")


OVERLAY_ALPHA = 0.45


def label_colormap(num_classes: int, colors: tuple[tuple[int, int, int], ...] = ()) -> ListedColormap:
    """Transparent background, then a colour per class: ``colors`` (R, G, B 0-255 per class, background first, e.g. a
    label set's FreeSurfer colour table) when given, else distinct matplotlib colours.

    Raises:
        ValueError: ``colors`` given but not one per class.
    """
    if colors:
        if len(colors) != num_classes:
            raise ValueError(f"Expected one colour per class ({num_classes}). Received: {len(colors)} colours")
        return ListedColormap([(0, 0, 0, 0)] + [(r / 255, g / 255, b / 255, OVERLAY_ALPHA) for r, g, b in colors[1:]])
    base = matplotlib.colormaps["tab10" if num_classes <= 11 else "tab20"]
    colours = [(0, 0, 0, 0)] + [(*base(i % base.N)[:3], OVERLAY_ALPHA) for i in range(num_classes - 1)]
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
    figure = Figure(figsize=(3 * columns, 3 * rows + 0.6))
    axes = figure.subplots(rows, columns, squeeze=False)
    cmap = label_colormap(label_set.num_classes, label_set.colors)
    for n, axis in enumerate(axes.flat):
        axis.axis("off")
        if n < count:
            # Axis 0 of a RAS slice runs left->right: transpose so that it is the picture's x axis.
            axis.imshow(inputs[n, :, :, inputs.shape[-1] // 2].T, cmap="gray", origin="lower", vmin=0, vmax=1)
            axis.imshow(classes[n].T, cmap=cmap, origin="lower", vmin=0, vmax=label_set.num_classes - 1, interpolation="nearest")
    handles = [Rectangle((0, 0), 1, 1, color=cmap(i)[:3]) for i in label_set.foreground_classes]
    figure.legend(handles, [label_set.names[i] for i in label_set.foreground_classes], loc="lower center", ncol=min(6, len(handles)), frameon=False)
    if title:
        figure.suptitle(title)
    return save_figure(figure, Path(path))


def save_volume_overlays(
    image: Volume, labels: Volume, label_set: LabelSet, path: str | os.PathLike[str], title: str = ""
) -> Path:
    """Save axial, coronal and sagittal slices of an image with its label map overlaid.

    Neurological convention (the subject's right on the picture's right; anterior up in axial
    views, superior up in the others): both volumes are reoriented to RAS+ without resampling, and
    pixels keep their true aspect ratio from the voxel sizes. Slices pass through the labelled
    voxels (see `_label_centre`).

    Args:
        image: intensity volume.
        labels: class indices on the image's grid.
        label_set: names the classes in the legend.
        path: PNG to write (atomically).
        title: figure title (keep patient identifiers out of it).

    Returns:
        The written path.
    """
    if labels.shape != image.shape or not np.allclose(labels.affine, image.affine, atol=1e-4):
        raise ValueError(f"Expected labels on the image's grid {image.shape}. Received: labels on {labels.shape} (or another affine)")
    ras_image, _ = reorient(image)
    ras_labels, _ = reorient(labels)
    sizes = ras_image.voxel_size
    centre = _label_centre(ras_labels.array)
    low, high = np.percentile(ras_image.array, [0.5, 99.5])
    cmap = label_colormap(label_set.num_classes, label_set.colors)
    figure = Figure(figsize=(12, 4.6))
    axes = figure.subplots(1, 3)
    for axis, plane in zip(axes, PLANES):
        shown_axis = {"axial": 2, "coronal": 1, "sagittal": 0}[plane]
        grey = np.take(ras_image.array, centre[shown_axis], axis=shown_axis)
        classes = np.take(ras_labels.array, centre[shown_axis], axis=shown_axis)
        x_size, y_size = (sizes[a] for a in range(3) if a != shown_axis)
        axis.imshow(grey.T, cmap="gray", origin="lower", vmin=low, vmax=high if high > low else low + 1, aspect=y_size / x_size)
        axis.imshow(classes.T, cmap=cmap, origin="lower", vmin=0, vmax=label_set.num_classes - 1, interpolation="nearest", aspect=y_size / x_size)
        axis.set_title(f"{plane} (slice {centre[shown_axis]})")
        axis.axis("off")
    handles = [Rectangle((0, 0), 1, 1, color=cmap(i)[:3]) for i in label_set.foreground_classes]
    figure.legend(handles, [label_set.names[i] for i in label_set.foreground_classes], loc="lower center", ncol=min(6, len(handles)), frameon=False)
    if title:
        figure.suptitle(title)
    return save_figure(figure, Path(path))


def _label_centre(labels: np.ndarray) -> tuple[int, int, int]:
    """Slice indices through the labelled (non-zero) voxels of a RAS+ volume: their centre, except
    the sagittal one, which passes through the centre of the right half (not the midline's fissure).
    The array centre when nothing is labelled."""
    foreground = np.argwhere(labels > 0)
    if foreground.size == 0:
        return tuple(int(n) // 2 for n in labels.shape)  # type: ignore[return-value]
    centre = foreground.mean(axis=0)
    right = foreground[foreground[:, 0] > centre[0]]
    if right.size:
        centre[0] = right[:, 0].mean()
    return tuple(int(round(c)) for c in centre)  # type: ignore[return-value]


def save_figure(figure: Figure, path: Path) -> Path:
    """Write a figure as PNG atomically (temporary name, then rename); a pyplot figure is closed after."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.part-{os.getpid()}.png")
    try:
        figure.savefig(temporary, dpi=100, bbox_inches="tight")
        os.replace(temporary, path)
    finally:
        _close_if_pyplot(figure)
        temporary.unlink(missing_ok=True)
    return path


def _close_if_pyplot(figure: Figure) -> None:
    """Release a figure pyplot manages (callers may pass one); object-API figures need nothing."""
    import sys

    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None and pyplot.fignum_exists(getattr(figure, "number", -1)):
        pyplot.close(figure)
