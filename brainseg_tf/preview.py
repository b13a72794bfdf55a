"""A preview PNG of what the shared generator feeds the networks: samples with their labels overlaid."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from brainseg_tf.config import Config
from brainseg_tf.data import TargetEncoding, make_dataset
from brainseg_tf.datasets import read_info, read_subjects
from brainseg_tf.visualize import save_sample_overlays


def save_generator_preview(cache: str | os.PathLike[str], config: Config, path: str | os.PathLike[str], count: int = 8) -> Path:
    """Draw one augmented training batch (softmax encoding) and save it with labels overlaid.

    Only the 2.5D slice mode is pictured; 3D patches show their middle slice along the last axis.
    """
    info = read_info(cache)
    generator = dataclasses.replace(config.generator, batch_size=count)
    dataset = make_dataset(read_subjects(cache, "train"), info.label_set, generator, TargetEncoding.softmax())
    inputs, targets = next(iter(dataset))
    inputs, classes = np.asarray(inputs), np.argmax(np.asarray(targets), axis=-1)
    if inputs.ndim == 5:  # (N, D, H, W, 1) patches: middle slice of the last axis
        middle = inputs.shape[3] // 2
        inputs, classes = inputs[:, :, :, middle, :], classes[:, :, :, middle]
    title = f"{generator.mode} along axis {generator.slice_axis}, {inputs.shape[-1]} channels, augmented"
    return save_sample_overlays(inputs, classes, info.label_set, path, title)
