"""The one typed configuration: every default lives here; YAML files and command lines only override.

Load with `load_config(path, overrides)`; save the effective values with `Config.to_dict()`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_type_hints

import yaml

from brainseg_tf.errors import ConfigError

T = TypeVar("T")


def default_cache_dir() -> Path:
    """``$BRAINSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/brainseg-tf``, else ``~/.cache/brainseg-tf``."""
    if os.environ.get("BRAINSEG_CACHE_DIR"):
        return Path(os.environ["BRAINSEG_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "brainseg-tf"


@dataclass(frozen=True)
class PreprocessConfig:
    """How every volume is conformed and normalised, in training and inference alike."""

    voxel_size: float = 1.0  # mm, isotropic target
    lower_percentile: float = 0.5  # intensity clipping, over voxels above zero
    upper_percentile: float = 99.5
    max_voxels: int = 512**3  # header check: larger volumes are refused (training and inference alike)


@dataclass(frozen=True)
class HeadConfig:
    """Procedural full heads grown around brain label maps (see datasets.heads).

    Ranges are (low, high) in mm for adults; every thickness varies smoothly around the head within
    its range, then is multiplied by ``thickness_scale``. Face and neck parts are adult shapes in
    MNI-sized millimetres, scaled with the brain and by a random ``face_scale``.
    """

    extracerebral_csf_mm: tuple[float, float] = (1.0, 4.0)  # subarachnoid CSF between brain and dura
    dura_mm: tuple[float, float] = (0.5, 1.5)
    inner_table_mm: tuple[float, float] = (1.0, 2.5)  # cortical bone facing the brain
    diploe_mm: tuple[float, float] = (1.0, 5.0)  # marrow between the tables
    outer_table_mm: tuple[float, float] = (1.0, 2.5)
    temporal_muscle_mm: tuple[float, float] = (4.0, 14.0)  # peak thickness over the temporal fossae, 0 elsewhere
    scalp_fat_mm: tuple[float, float] = (1.5, 6.0)  # subcutaneous fat, under the skin of scalp, face and neck
    skin_mm: tuple[float, float] = (1.5, 3.0)
    thickness_scale: float = 1.0  # multiplies every thickness above: about 0.5-0.7 for young children
    thickness_smoothness_mm: float = 40.0  # spacing of the control points of the thickness fields
    face_scale: tuple[float, float] = (0.9, 1.1)  # face and neck size relative to an adult's on this brain; children ~ (0.6, 0.8)
    position_jitter_mm: float = 4.0  # random shift of each face/neck part (adult mm, scaled with the brain)
    size_jitter: float = 0.15  # relative random change of each part's semi-axes, in [0, 1)
    shape_warp: float = 0.12  # relative amplitude of the smooth field warping each part's surface, in [0, 0.4]
    neck_pitch_deg: float = 12.0  # largest random flexion (+) or extension (-) of the neck below the skull
    neck_length_mm: float = 30.0  # neck kept below the chin (adult mm, scaled with the brain)
    stripped_probability: float = 0.0  # share of heads arriving skull-stripped (imaged whole, then exactly 0 beyond a margin of the brain)
    stripped_margin_mm: tuple[float, float] = (0.0, 4.0)  # how far beyond the brain a stripped head keeps its tissue
    anatomy: Literal["full", "cranium"] = "full"  # cranium: only the cranial layers near the brain (datasets.heads.build_cranium),
    # about 10x cheaper at 1 mm, for heads that are all stripped (stripped_probability 1): no face, orbits or sinuses to cut away
    brain_scale: tuple[float, float] = (1.0, 1.0)  # linear size of the brain relative to the stored one, drawn per head (children ~0.65-0.8)
    brain_scale_probability: float = 1.0  # share of heads whose size is drawn from brain_scale; the others keep the stored size
    # (children as a minority of training heads: a network trained mostly on child-sized heads overshoots adults' brains)
    child_layers: bool = False  # a brain drawn smaller than 1 gets a child's head: thinner layers and a smaller face (synthetic_heads.child_head)
    layer_scale: tuple[float, float] = (1.0, 1.0)  # every layer's thickness times a factor drawn per head from this range, whatever
    # the brain's size (thin layers on adult brains too, so thickness alone does not say where a brain ends)
    brain_aspect_jitter: float = 0.0  # per-axis relative change of the brain's size on top of brain_scale (0.15: each axis x0.85-1.15)
    tissue_split_probability: float = 0.0  # share of head images whose non-brain tissues are split into parts with contrasts of their own
    tissue_parts: int = 3  # parts per tissue in such an image (fascia, marrow, glands: real tissue outside the brain is not uniform)
    tissue_part_spacing_mm: tuple[float, float] = (4.0, 16.0)  # control-point spacing of the field that draws the parts


@dataclass(frozen=True)
class EmbeddedDatasetConfig:
    """Recipe of the embedded dataset synthesised from the MNI152 2009 template (see datasets.embedded)."""

    n_train: int = 20
    n_val: int = 5
    n_test: int = 5
    seed: int = 2026
    template_voxel_size: float = 1.0  # mm; the quick setting coarsens the template to stay small
    max_rotation_deg: float = 10.0
    max_scale: float = 0.10  # relative, per axis
    max_shear: float = 0.05
    max_translation_mm: float = 8.0
    elastic_sigma_mm: float = 3.0  # peak displacement of the smooth elastic field
    elastic_spacing_mm: float = 24.0  # control-point spacing of the elastic field
    bias_field_strength: float = 0.25  # log-amplitude of the smooth multiplicative bias
    gamma_log_std: float = 0.15
    noise_std: float = 0.03  # relative to the white-matter intensity
    contrast_jitter: float = 0.10  # relative change of the GM/WM/CSF intensities
    resampled_fraction: float = 0.3  # share of subjects stored with another voxel size and orientation


@dataclass(frozen=True)
class AugmentConfig:
    """On-the-fly augmentation in the generator (seeded per sample)."""

    flip_probability: float = 0.5  # left/right mirror, with label swap where the label set pairs classes
    max_rotation_deg: float = 8.0
    max_scale: float = 0.08
    gamma_log_std: float = 0.1
    intensity_scale: float = 0.1
    noise_std: float = 0.02


@dataclass(frozen=True)
class SynthesisConfig:
    """Images synthesised from label maps (`brainseg_tf.data.synthesis`): per-sample random contrast per label,
    then bias, gamma, resolution loss and Rician noise. Intensities on a T1-like scale (white matter about 1);
    every (low, high) range is drawn uniformly unless said otherwise."""

    prior_probability: float = 0.5  # share of samples whose label intensities come from the T1-like priors; the rest random
    random_mean_range: tuple[float, float] = (0.0, 1.0)  # per-label means of random (non-T1) contrasts, as SynthSeg
    random_std_range: tuple[float, float] = (0.0, 0.1)  # per-label within-label stds of random contrasts
    smooth_variation_fraction: float = 0.3  # ratio of within-label variance that varies smoothly in space (0: white only)
    smooth_variation_spacing_mm: float = 16.0  # control-point spacing of that smooth variation
    thick_slice_probability: float = 0.5  # share of samples acquired with thick slices along a random axis
    slice_thickness_range_mm: tuple[float, float] = (2.0, 7.0)  # acquired thickness along that axis (e.g. 1x1x5 mm)
    in_plane_voxel_range_mm: tuple[float, float] = (0.8, 1.5)  # acquired size along the two other axes (at least the canvas's)
    partial_volume_sigma_range: tuple[float, float] = (0.25, 0.75)  # Gaussian sigma in canvas voxels on axes not subsampled
    bias_strength_range: tuple[float, float] = (0.0, 0.4)  # peak log-amplitude of the multiplicative bias (0.4: x0.67 to x1.49)
    gamma_log_std: float = 0.35  # gamma = exp(N(0, gamma_log_std)) about the mean foreground intensity ...
    gamma_range: tuple[float, float] = (0.5, 2.0)  # ... clipped to this range (ratios)
    snr_range: tuple[float, float] = (5.0, 50.0)  # Rician SNR: mean foreground intensity / noise std, drawn log-uniformly


@dataclass(frozen=True)
class GeneratorConfig:
    """The one data generator both model families share."""

    mode: Literal["slices", "patches"] = "slices"
    slice_axis: int = 2  # canonical RAS axis: 0 sagittal, 1 coronal, 2 axial
    context: int = 1  # neighbouring slices on each side, stacked as channels (2.5D)
    random_slice_axis: bool = False  # 2.5D from synthetic heads (data.heads): each batch along a random axis, not slice_axis
    batches_per_head: int = 1  # synthetic heads (data.heads): consecutive batches cut from one head (its synthesis is the slow part)
    slice_shape: tuple[int, int] = (128, 128)  # in-plane crop of each 2.5D sample
    patch_shape: tuple[int, int, int] = (64, 64, 64)  # 3D patch mode
    foreground_fraction: float = 0.7  # share of samples centred on a foreground class (classes drawn evenly)
    centre_on: Literal["any class", "own class"] = "any class"  # foreground centres: any class (every network sees the same
    # samples), or a single-class network's own class and its left/right partner (a member of a small structure sees it in
    # every foreground sample; the multi-class network is unchanged)
    batch_size: int = 16
    samples_per_epoch: int = 512
    seed: int = 0
    parallel_calls: int = 2  # tf.data map parallelism; -1 lets tf.data tune it
    prefetch_batches: int = 2
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    heads: HeadConfig = field(default_factory=HeadConfig)  # full heads grown around the brains (datasets.heads)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)  # images from head label maps (data.synthesis)

    @property
    def channels(self) -> int:
        """Input channels per sample: the slice and its context, or 1 for patches."""
        return 2 * self.context + 1 if self.mode == "slices" else 1


@dataclass(frozen=True)
class DataConfig:
    """Where data comes from and how it is cached."""

    source: Literal["embedded", "manifest", "freesurfer"] = "embedded"
    label_set: str = "tissue"
    heads: Literal["off", "tissue", "brain", "structures"] = "off"  # train on fresh synthetic full heads grown around the cached
    # brains, against their tissue classes, their brain mask (label set "brain") or their structures (label_set structures:
    # each structure imaged with a contrast of its own); off: the cached subjects as they are
    heads_fraction: float = 1.0  # with heads: share of training batches (and validation samples) from the heads; the rest from
    # the cached subjects as they are (only for tissue targets: the cache's label set)
    unknown_labels: Literal["error", "background"] = "error"
    manifest: str | None = None  # CSV with subject,image,label[,split]
    subjects_dir: str | None = None  # FreeSurfer SUBJECTS_DIR
    cache_dir: str | None = None  # None: default_cache_dir()
    val_fraction: float = 0.2  # user datasets without a split column
    test_fraction: float = 0.2
    embedded: EmbeddedDatasetConfig = field(default_factory=EmbeddedDatasetConfig)

    def resolved_cache_dir(self) -> Path:
        """The cache folder actually used."""
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()


@dataclass(frozen=True)
class ModelConfig:
    """The encoder-decoder backbone shared by both families (the head is picked by the family)."""

    base_filters: int = 8  # filters of the first level, doubled at each downsampling (8: CPU-sized, see docs/benchmarks.md)
    depth: int = 4  # number of downsamplings; inputs are padded to a multiple of 2**depth
    convs_per_level: int = 2
    normalization: Literal["batch", "none"] = "batch"
    upsampling: Literal["transpose", "resize"] = "transpose"  # strided transposed conv, or nearest resize + 3x3 conv
    dropout: float = 0.0  # at the bottleneck
    dice_weight: float = 1.0  # loss = dice_weight * soft Dice + crossentropy_weight * cross-entropy
    crossentropy_weight: float = 1.0
    positive_weight: float | None = None  # sigmoid family: weight of the positive class in the BCE (None: balanced per batch)


@dataclass(frozen=True)
class TrainingConfig:
    """How `python -m training` fits a network (the family and label come from the command line)."""

    epochs: int = 30
    learning_rate: float = 1e-3
    learning_rate_schedule: Literal["constant", "cosine"] = "constant"  # cosine: from learning_rate down over the epochs
    final_learning_rate_fraction: float = 0.05  # cosine: the last epoch's rate, as a fraction of learning_rate
    early_stopping_patience: int = 8  # epochs without a better validation loss; 0 disables
    validation_samples: int = 128  # fixed, unaugmented, seeded validation samples scored every epoch
    strategy: Literal["auto", "default", "mirrored", "multiworker"] = "auto"  # auto: mirrored on >1 GPU
    mixed_precision: bool = False  # mixed_float16 on GPUs; outputs stay float32
    deterministic: bool = False  # seeds + TensorFlow op determinism, for reproducible CPU runs
    seed: int = 0
    output_dir: str = "outputs/training"  # run folders (checkpoints, logs, bundles) go below
    ensemble_pairs: Literal["apart", "mirrored"] = "apart"  # ensemble: a member per class, or one member per left/right pair of
    # the label set, run on the volume and on its mirror (the flip augmentation already teaches it either side; docs/structures.md)
    member_region_margin_mm: float = 0.0  # ensemble on the structures label set: > 0 gives each member the atlas box of its class
    # grown by this margin, read alone at inference (brainseg_tf.regions); 0: every member reads the whole volume
    init_from: str | None = None  # fine-tuning: a bundle whose weights start a fresh run (a model bundle of the same family and
    # classes; for ensemble members, an ensemble bundle: each member starts from its class's member). A resumed run ignores it


@dataclass(frozen=True)
class QcConfig:
    """Limits of the input QC (`inference.qc`): a check flags a volume at or beyond its limit.

    Calibrated on one synthetic full head (realistic-heads suite, seed 1) and its 16 variants with a
    candidate brain extractor attached (docs/real-heads.md, section 3).
    """

    min_brain_ml: float = 100.0  # less brain than this: "no brain found", the volume is refused
    plausible_brain_ml: tuple[float, float] = (300.0, 2600.0)  # brain mask volume, a newborn's to a large adult's
    min_direction_agreement: float = 0.5  # lowest Dice between the extractor's slice directions (docs/real-heads.md, 3)
    min_structure: float = 0.3  # neighbour-voxel correlation inside the brain (noise: about 0)
    min_brain_over_shell: float = 0.2  # (median brain - median shell outside it) / brain's 5-95 % spread; T1 > 0
    min_white_over_gray: float = 0.0  # (median white - median gray matter) / the same spread; T1 > 0
    shell_mm: tuple[float, float] = (1.0, 5.0)  # the shell: this far outside the brain mask
    accept_named_contrast: bool = False  # a DICOM series described as T2/FLAIR/DWI/...: segment it without the flag


@dataclass(frozen=True)
class InferenceConfig:
    """How a trained bundle is applied to a whole volume (`inference.Segmenter`); none of it changes the
    networks' input contract, only how the work is cut up (docs/benchmarks.md)."""

    batch_size: int = 16  # stacks per call of a 2.5D slice network (one traced shape per volume)
    workers: int = 3  # slice-network calls in flight at once, and blocks of the final argmax; 1: calling thread only
    patch_batch_size: int = 2  # 3D patches per call: ~100x the voxels of a slice, so a few bound the memory
    patch_overlap: float = 0.5  # fraction of a 3D patch shared with its neighbour along each axis, in [0, 1)
    background_threshold: float = 0.05  # normalised intensity at or below which a voxel is empty (never predicted)
    margin: int = 8  # voxels kept around the non-empty box, so the network sees the head's edge
    brain_margin_mm: float = 3.0  # bundles with a brain extractor: the tissue networks see the brain mask grown by this
    extraction_axes: tuple[int, ...] = (0, 1)  # canonical axes a 2.5D brain extractor runs along (0 sagittal, 1 coronal, 2 axial), probabilities
    # averaged; axial slices were the weakest on held-out heads (docs/real-heads.md, section 2)
    stripped_min_background: float = 0.3  # an input with at least this share of voxels exactly at its minimum ...
    stripped_max_brain_ml: float = 2600.0  # ... and a nonzero region no larger than this arrived skull-stripped (inference.extraction),
    stripped_max_agreement: float = 0.8  # unless the extractor's directions agree at least this much on a brain inside it (a child's whole head)
    qc: QcConfig = field(default_factory=QcConfig)


@dataclass(frozen=True)
class Config:
    """Everything a run needs."""

    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists): what gets saved next to results."""
        return _plain(dataclasses.asdict(self))

    def replace(self, overrides: dict[str, Any]) -> Config:
        """A copy with dotted-key overrides applied, e.g. ``{"generator.batch_size": 8}``."""
        data = self.to_dict()
        for dotted, value in overrides.items():
            _set_dotted(data, dotted, value)
        return from_dict(Config, data)


QUICK_OVERRIDES: dict[str, Any] = {
    "data.embedded.n_train": 3,
    "data.embedded.n_val": 1,
    "data.embedded.n_test": 1,
    "data.embedded.template_voxel_size": 3.0,
    "preprocess.voxel_size": 3.0,
    "generator.slice_shape": [32, 32],
    "generator.patch_shape": [16, 16, 16],
    "generator.batch_size": 4,
    "generator.samples_per_epoch": 16,
    "model.base_filters": 4,
    "model.depth": 2,
    "training.epochs": 2,
    "training.validation_samples": 8,
}
"""A small setting for tests and quick looks: five subjects at 3 mm, a tiny network, two epochs."""


def load_config(path: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults, then a YAML/JSON file's values, then dotted-key overrides.

    Raises:
        ConfigError: unreadable file, unknown key or wrongly typed value.
    """
    data = Config().to_dict()
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise ConfigError(f"{path}: cannot read config ({_one_line(error)})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level. Received: {type(loaded).__name__}")
        _merge(data, loaded, prefix="")
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
    return from_dict(Config, data)


def config_from_command_line(path: str | os.PathLike[str] | None, set_items: Sequence[str], quick: bool = False) -> Config:
    """What a command line asks for: defaults <- ``--config`` file <- ``--quick`` <- ``--set KEY=VALUE`` items
    (later wins; each VALUE read as YAML, so ``8``, ``true`` and ``[32, 32]`` keep their types).

    Raises:
        ConfigError: an item without ``=``, or what `load_config` refuses.
    """
    overrides: dict[str, Any] = dict(QUICK_OVERRIDES) if quick else {}
    for item in set_items:
        key, separator, value = item.partition("=")
        if not separator:
            raise ConfigError(f"Expected --set KEY=VALUE. Received: {item!r}")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ConfigError(f"Expected --set {key.strip()}=<YAML value>. Received: {value!r} ({_one_line(error)})") from None
    return load_config(path, overrides)


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build a (nested) config dataclass from a plain dict, checking keys and types."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        shown = sorted(f"{prefix}{k}" for k in unknown)
        raise ConfigError(f"Unknown config key(s) {shown}. Expected keys: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"Expected a mapping for {prefix}{name}. Received: {value!r}")
            kwargs[name] = from_dict(hint, value, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = getattr(hint, "__origin__", None)
    args = getattr(hint, "__args__", ())
    if hint is Any:
        return value
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"Expected {key} in {list(args)}. Received: {value!r}")
        return value
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: any length
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"Expected {key} as a list. Received: {value!r}")
        return tuple(_coerce(v, args[0], key) for v in value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"Expected {key} as a list of {len(args)} values. Received: {value!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if args and type(None) in args:  # Optional[X]
        if value is None:
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), key)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"Expected {key} as true/false. Received: {value!r}")
        return value
    if hint is str:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ConfigError(f"Expected {key} as str. Received: {value!r}")
        return str(value)
    if hint in (int, float):
        if isinstance(value, bool) or (hint is int and isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"Expected {key} as {hint.__name__}. Received: {value!r}")
        try:
            return hint(value)
        except (TypeError, ValueError):
            raise ConfigError(f"Expected {key} as {hint.__name__}. Received: {value!r}") from None
    return value


def _merge(base: dict[str, Any], update: dict[str, Any], prefix: str) -> None:
    for key, value in update.items():
        if key not in base:
            dotted = f"{prefix}{key}"
            raise ConfigError(f"Unknown config key {dotted!r}. Expected one of: {sorted(base)}")
        if isinstance(base[key], dict) and isinstance(value, dict):
            _merge(base[key], value, prefix=f"{prefix}{key}.")
        else:
            base[key] = value


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"Unknown config key {dotted!r}")
        node = node[part]
    if leaf not in node:
        raise ConfigError(f"Unknown config key {dotted!r}. Expected one of: {sorted(node)}")
    if isinstance(node[leaf], dict) and isinstance(value, dict):
        _merge(node[leaf], value, prefix=f"{dotted}.")  # a section: override only the keys given
    else:
        node[leaf] = value


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
