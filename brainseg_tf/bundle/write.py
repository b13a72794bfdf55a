"""Writing model and ensemble bundles: staged in a hidden sibling folder, then renamed into place."""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from brainseg_tf.bundle.export import check_serving_matches, export_saved_model, inference_copy
from brainseg_tf.bundle.extractor import check_brain_extractor_source, copy_brain_extractor
from brainseg_tf.bundle.manifest import sha256_file, write_manifest
from brainseg_tf.bundle.spec import (
    ATLAS_FRAME_KEY,
    BUNDLE_JSON,
    FAMILIES,
    FORMAT_VERSION,
    KERAS_FILE,
    MANIFEST,
    MEMBERS_DIR,
    MIRRORED_CLASS_KEY,
    REGION_KEY,
    SAVED_MODEL_DIR,
    member_name,
)
from brainseg_tf.bundle.staging import staged
from brainseg_tf.bundle.verify import BRAIN_EXTRACTOR_KEY, verify_bundle
from brainseg_tf.config import Config
from brainseg_tf.errors import BundleError
from brainseg_tf.labels import LabelSet
from brainseg_tf.preprocessing import InputSpec
from brainseg_tf.regions import AtlasFrame, Region

logger = logging.getLogger(__name__)


def write_model_bundle(
    path: str | os.PathLike[str],
    model,
    *,
    family: str,
    label_set: LabelSet,
    config: Config,
    metrics: Mapping[str, float],
    class_index: int | None = None,
    brain_extractor: str | os.PathLike[str] | None = None,
) -> Path:
    """Write one trained network as a bundle: ``model.keras``, ``saved_model/``, ``bundle.json``, manifest.

    Everything is written into a hidden sibling folder, checked (manifest, and the SavedModel
    against the Keras model on a probe batch), then renamed onto ``path``; an existing bundle there
    is replaced, anything else is refused. The saved network has polymorphic spatial sizes and no
    optimizer or compile state.

    Args:
        path: the bundle folder to create or replace.
        model: a trained `keras.Model` from `brainseg_tf.models.build_segmenter`.
        family: ``"multiclass"`` or ``"single_class"``.
        label_set: the classes the network was trained on.
        config: the effective training config (the input contract is derived from it).
        metrics: validation metrics, name -> value (non-finite values are stored as null).
        class_index: single_class: the foreground class the network segments; multiclass: None.
        brain_extractor: a brain-extractor bundle to ship inside (multiclass only; see
            `brainseg_tf.bundle.extractor`).

    Returns:
        The bundle folder.

    Raises:
        BundleError: inconsistent arguments, an existing non-bundle at ``path``, or a failed check.
    """
    target = Path(path)
    _check_model_arguments(target, model, family, label_set, config, class_index)
    if brain_extractor is not None and family != "multiclass":
        raise BundleError(target, "only a multiclass model or an ensemble holds a brain extractor")
    extractor = None if brain_extractor is None else check_brain_extractor_source(brain_extractor)
    description = _description("model", family, class_index, label_set, config, _clean_metrics(target, metrics))
    with staged(target) as staging:
        inference_model = inference_copy(target, model)
        inference_model.save(staging / KERAS_FILE)
        export_saved_model(inference_model, staging / SAVED_MODEL_DIR)
        check_serving_matches(staging, inference_model, InputSpec.from_config(config).pad_multiple)
        _finish(staging, description, extractor)
    logger.info("Wrote %s bundle %s", family, target)
    return target


def write_ensemble_bundle(
    path: str | os.PathLike[str],
    members: Sequence[str | os.PathLike[str]],
    *,
    label_set: LabelSet,
    config: Config,
    metrics: Mapping[str, float],
    brain_extractor: str | os.PathLike[str] | None = None,
    mirrored_pairs: bool = False,
    regions: tuple[AtlasFrame, Mapping[int, Region]] | None = None,
) -> Path:
    """Gather single_class model bundles into one ensemble bundle.

    Each member is verified, copied to ``members/<class name slug>`` and verified again; the
    ensemble's ``bundle.json`` lists them with the sha256 of their manifests, and its manifest
    covers every file, members included. Written atomically like `write_model_bundle`.

    Args:
        path: the ensemble folder to create or replace.
        members: single_class model bundles of distinct classes of ``label_set``, same input spec.
        label_set: the classes of the task.
        config: the effective config (its input spec must be the members').
        metrics: validation metrics of the fused ensemble.
        brain_extractor: a brain-extractor bundle to ship inside (see `brainseg_tf.bundle.extractor`).
        mirrored_pairs: each member of a class in a left/right pair of ``label_set`` also segments its partner,
            on the mirrored volume (`MIRRORED_CLASS_KEY`); no member may then hold a partner.
        regions: the atlas brain's moments and, per member class, the atlas box it reads (`brainseg_tf.regions`);
            members without a box read the whole volume.

    Returns:
        The ensemble folder.

    Raises:
        BundleError: a member that fails verification or disagrees with the others or the arguments.
    """
    target = Path(path)
    _check_types(target, label_set, config)
    if not members:
        raise BundleError(target, "expected at least one member bundle. Received: members=[]")
    description = _description("ensemble", "single_class", None, label_set, config, _clean_metrics(target, metrics))
    sources = sorted(((Path(m), verify_bundle(m)) for m in members), key=lambda source: source[1]["class_index"])
    for source, data in sources:
        _check_member(target, source, data, description)
    class_indices = [data["class_index"] for _, data in sources]
    names = _member_names(target, label_set, class_indices)
    mirrored = _mirrored_classes(target, label_set, class_indices) if mirrored_pairs else {}
    extractor = None if brain_extractor is None else check_brain_extractor_source(brain_extractor)
    with staged(target) as staging:
        entries = []
        for (source, data), name in zip(sources, names):
            copy = staging / MEMBERS_DIR / name
            shutil.copytree(source, copy, symlinks=True)
            verify_bundle(copy)
            entry = {"name": name, "class_index": data["class_index"], "path": f"{MEMBERS_DIR}/{name}"}
            if data["class_index"] in mirrored:
                entry[MIRRORED_CLASS_KEY] = mirrored[data["class_index"]]
            if regions is not None and data["class_index"] in regions[1]:
                entry[REGION_KEY] = regions[1][data["class_index"]].to_list()
            entries.append({**entry, "sha256": sha256_file(copy / MANIFEST)})
        description["members"] = entries
        if regions is not None:
            description[ATLAS_FRAME_KEY] = regions[0].to_dict()
        _finish(staging, description, extractor)
    logger.info("Wrote ensemble bundle %s with members %s", target, names)
    return target


def _check_model_arguments(target: Path, model, family: str, label_set: LabelSet, config: Config, class_index: int | None) -> None:
    if family not in FAMILIES:
        raise BundleError(target, f"expected family in {list(FAMILIES)}. Received: family={family!r}")
    _check_types(target, label_set, config)
    foreground = list(label_set.foreground_classes)
    if family == "single_class":
        if isinstance(class_index, bool) or not isinstance(class_index, (int, np.integer)) or class_index not in foreground:
            raise BundleError(target, f"expected class_index in {foreground} for single_class. Received: class_index={class_index!r}")
    elif class_index is not None:
        raise BundleError(target, f"expected class_index=None for multiclass. Received: class_index={class_index!r}")
    rank = 4 if config.generator.mode == "slices" else 5
    channels_in = config.generator.channels
    inputs = [tuple(i.shape) for i in model.inputs]
    if len(inputs) != 1 or len(inputs[0]) != rank or inputs[0][-1] != channels_in:
        expected = f"rank {rank} with {channels_in} channel(s) for generator.mode={config.generator.mode!r}"
        raise BundleError(target, f"expected one model input of {expected}. Received: {inputs}")
    channels_out = label_set.num_classes if family == "multiclass" else 1
    outputs = [tuple(o.shape) for o in model.outputs]
    if len(outputs) != 1 or outputs[0][-1] != channels_out:
        expected = f"{channels_out} channel(s) for {family} on label set {label_set.name!r}"
        raise BundleError(target, f"expected one model output with {expected}. Received: {outputs}")


def _check_types(target: Path, label_set: LabelSet, config: Config) -> None:
    if not isinstance(label_set, LabelSet) or not isinstance(config, Config):
        received = f"label_set={type(label_set).__name__}, config={type(config).__name__}"
        raise BundleError(target, f"expected label_set as a LabelSet and config as a Config. Received: {received}")


def _check_member(target: Path, source: Path, data: dict[str, Any], ensemble: dict[str, Any]) -> None:
    expected = {"kind": "model", "family": "single_class"}
    expected.update({key: ensemble[key] for key in ("label_set", "input_spec")})
    for key, value in expected.items():
        if data[key] != value:
            raise BundleError(source, f"cannot join ensemble {target}: expected {key} {value!r}. Received: {data[key]!r}")


def _mirrored_classes(target: Path, label_set: LabelSet, class_indices: list[int]) -> dict[int, int]:
    """Member class -> the partner it segments on the mirrored volume, for every member class in a pair."""
    partners = label_set.lr_partners()
    mirrored = {index: partners[index] for index in class_indices if index in partners}
    if not mirrored:
        raise BundleError(target, f"expected mirrored pairs only on a label set with left/right pairs and members in them. "
                                  f"Received: label set {label_set.name!r}, member classes {class_indices}")
    both = [f"{label_set.names[left]}/{label_set.names[right]}" for left, right in label_set.lr_pairs if left in class_indices and right in class_indices]
    if both:
        raise BundleError(target, f"expected one member per left/right pair with mirrored pairs. Received: members for both sides of {', '.join(both)}")
    return mirrored


def _member_names(target: Path, label_set: LabelSet, class_indices: list[int]) -> list[str]:
    if len(set(class_indices)) != len(class_indices):
        raise BundleError(target, f"expected members of distinct classes. Received class indices {class_indices}")
    names = [member_name(label_set.names[i], i) for i in class_indices]
    if len(set(names)) != len(names):  # two class names with the same slug: disambiguate by index
        names = [f"{name}_{i}" for name, i in zip(names, class_indices)]
    return names


def _description(
    kind: str, family: str, class_index: int | None, label_set: LabelSet, config: Config, metrics: dict[str, float | None]
) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "family": family,
        "class_index": None if class_index is None else int(class_index),
        "label_set": label_set.to_dict(),
        "input_spec": InputSpec.from_config(config).to_dict(),
        "config": config.to_dict(),
        "metrics": metrics,
        "versions": _versions(),
        "git_commit": _git_commit(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _clean_metrics(target: Path, metrics: Mapping[str, float]) -> dict[str, float | None]:
    cleaned: dict[str, float | None] = {}
    for name, value in dict(metrics or {}).items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise BundleError(target, f"expected metrics as numbers. Received: {name}={value!r}") from None
        if not math.isfinite(number):
            logger.warning("Metric %s=%s is not finite; stored as null in %s", name, value, target)
        cleaned[str(name)] = number if math.isfinite(number) else None
    return cleaned


def _versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    import brainseg_tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "brainseg_tf": brainseg_tf.__version__,
    }


def _git_commit() -> str | None:
    """``git rev-parse HEAD`` of the checkout this package runs from; None when that is not available."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and len(commit) == 40 else None


def _finish(staging: Path, description: dict[str, Any], brain_extractor: Path | None = None) -> None:
    if brain_extractor is not None:
        description[BRAIN_EXTRACTOR_KEY] = copy_brain_extractor(staging, brain_extractor)
    (staging / BUNDLE_JSON).write_text(json.dumps(description, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    write_manifest(staging)
    verify_bundle(staging)
