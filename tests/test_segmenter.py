"""Segmenter on stand-in networks of known behaviour: every input grid gets its labels back on that grid."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import nibabel.orientations as nio
import numpy as np
import pytest

from brainseg_tf.config import InferenceConfig
from brainseg_tf.errors import BundleError, ImageError, VolumeError
from brainseg_tf.geometry import conform
from brainseg_tf.io import Image, save_volume
from brainseg_tf.labels import TISSUE
from brainseg_tf.preprocessing import InputSpec, Preprocessing, SliceReader
from inference.heads import Network, SigmoidEnsembleHead, SoftmaxHead
from inference.inferers import SliceInferer
from inference.postprocess import keep_largest_components
from inference.predict import SliceSpec
from inference.segmenter import Segmenter

INPUT_SPEC = InputSpec(Preprocessing(1.0, 0.5, 99.5), SliceReader(2, 1), 8)
STAND_IN = Path("stand-in-bundle")
# Raw intensities of the phantom and the class each stands for. The dim "skin" is background: it is
# the lowest foreground intensity, so normalisation maps it to 0 and the classes to 1/3, 2/3 and 1.
SKIN, CLASS_INTENSITY = 0.1, {1: 0.4, 2: 0.7, 3: 1.0}
BANDS = np.array([0.15, 0.5, 0.85])  # normalised thresholds between background, 1, 2 and 3


def _phantom(shape: tuple[int, int, int] = (24, 28, 20)) -> tuple[np.ndarray, np.ndarray]:
    """An asymmetric RAS+ image and its classes: boxes of three intensities in a dim shell, off-centre."""
    image = np.zeros(shape, np.float32)
    image[2:22, 2:26, 2:18] = SKIN
    classes = np.zeros(shape, np.uint8)
    classes[4:12, 5:20, 4:9] = 1
    classes[12:20, 5:12, 4:16] = 2
    classes[12:20, 14:24, 10:16] = 3
    for index, value in CLASS_INTENSITY.items():
        image[classes == index] = value
    return image, classes


def _softmax_network(batch: np.ndarray) -> np.ndarray:
    """Classifies the centre slice by normalised intensity bands; one-hot (B, H, W, 4)."""
    classes = np.digitize(batch[..., batch.shape[-1] // 2], BANDS)
    return np.eye(4, dtype=np.float32)[classes]


def _member(class_index: int):
    def predict(batch: np.ndarray) -> np.ndarray:
        return (np.digitize(batch[..., batch.shape[-1] // 2], BANDS) == class_index).astype(np.float32)[..., None]

    return predict


def _network(predict, channels: int, slice_axis: int = 2, class_index: int | None = None, predict_labels=None) -> Network:
    inferer = SliceInferer(SliceSpec(slice_axis, 1, 8, channels, margin=2), batch_size=4, workers=3)
    return Network(predict, inferer, STAND_IN, class_index, predict_labels)


def _multiclass(slice_axis: int = 2, predict_labels=None) -> Segmenter:
    head = SoftmaxHead((_network(_softmax_network, 4, slice_axis, predict_labels=predict_labels),), workers=3)
    return Segmenter(head, TISSUE, INPUT_SPEC)


class _CountedLabels:
    """The argmax of `_softmax_network` as one function, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.argmax(_softmax_network(batch), axis=-1).astype(np.uint8)


def _ensemble() -> Segmenter:
    head = SigmoidEnsembleHead(tuple(_network(_member(k), 1, class_index=k) for k in (1, 2, 3)), TISSUE.num_classes)
    return Segmenter(head, TISSUE, INPUT_SPEC)


def _reoriented(array: np.ndarray, affine: np.ndarray, axcodes: str) -> tuple[np.ndarray, np.ndarray]:
    """The same object stored in another axis order: array and affine for ``axcodes``."""
    transform = nio.ornt_transform(nio.axcodes2ornt("RAS"), nio.axcodes2ornt(tuple(axcodes)))
    return nio.apply_orientation(array, transform), affine @ nio.inv_ornt_aff(transform, array.shape)


def _rotation(degrees: float) -> np.ndarray:
    angle = np.deg2rad(degrees)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    return rotation


def _grid_case(name: str) -> tuple[Image, np.ndarray]:
    """(input image, expected classes on its grid) for one of the grids of `GRIDS`."""
    image, classes = _phantom()
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-12.0, -14.0, -10.0]
    if name == "oblique":
        return Image(image, _rotation(12.0) @ affine), classes
    if name == "anisotropic 1x1x3":
        thick = slice(1, None, 3)  # every third slice: the centres of 3 mm voxels of the 1 mm phantom
        affine[2, 2] = 3.0
        return Image(image[:, :, thick], affine), classes[:, :, thick]
    reoriented, reoriented_affine = _reoriented(image, affine, name)
    expected, _ = _reoriented(classes, affine, name)
    return Image(np.ascontiguousarray(reoriented), reoriented_affine), expected


GRIDS = ["RAS", "LAS", "LPS", "LIA", "oblique", "anisotropic 1x1x3"]


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("family", ["multiclass", "ensemble"])
def test_labels_come_back_on_the_input_grid(grid: str, family: str) -> None:
    image, expected = _grid_case(grid)
    segmenter = _multiclass() if family == "multiclass" else _ensemble()
    for with_scores in (False, True):  # labels alone (taken before going back, when conform did not resample), and with scores
        segmentation = segmenter.segment(image, with_scores=with_scores)
        assert segmentation.labels.array.shape == image.array.shape
        assert np.array_equal(segmentation.labels.affine, image.affine)
        assert segmentation.labels.array.dtype == np.uint8
        assert np.array_equal(segmentation.labels.array, expected)
        if with_scores:
            assert segmentation.scores.array.shape == (*image.array.shape, TISSUE.num_classes)
            assert np.array_equal(segmentation.scores.affine, image.affine)
        else:
            assert segmentation.scores is None


@pytest.mark.parametrize("grid", GRIDS)
def test_a_labels_function_serves_labels_alone_when_conform_did_not_resample(grid: str) -> None:
    image, expected = _grid_case(grid)
    counted = _CountedLabels()
    segmenter = _multiclass(predict_labels=counted)
    resamples = not conform(image, 1.0)[1].only_reorients
    assert resamples == (grid == "anisotropic 1x1x3")
    assert np.array_equal(segmenter.segment(image).labels.array, expected)
    assert (counted.calls > 0) != resamples  # the labels function, unless scores must be resampled
    calls = counted.calls
    for options in ({"with_scores": True}, {"largest_component": True}):
        assert np.array_equal(segmenter.segment(image, **options).labels.array, expected)
        assert counted.calls == calls  # scores wanted: the probabilities, not the labels function


@pytest.mark.parametrize("slice_axis", [0, 1])
def test_other_slice_axes_give_the_same_labels(slice_axis: int) -> None:
    image, expected = _grid_case("LIA")
    assert np.array_equal(_multiclass(slice_axis).segment(image).labels.array, expected)


def test_mgz_and_nifti_files_give_the_same_labels(tmp_path: Path) -> None:
    image, expected = _grid_case("LIA")
    for name in ("lia.mgz", "lia.nii.gz", "lia.nii"):
        path = save_volume(image, tmp_path / name)
        loaded, segmentation = _multiclass().segment_file(path)
        assert np.allclose(loaded.affine, image.affine, atol=1e-5)
        assert np.array_equal(segmentation.labels.array, expected), name


def test_fused_ensemble_labels_hold_only_valid_classes() -> None:
    rng = np.random.default_rng(3)

    def noisy_member(batch: np.ndarray) -> np.ndarray:
        return rng.random((*batch.shape[:3], 1), dtype=np.float32)

    head = SigmoidEnsembleHead(tuple(_network(noisy_member, 1, class_index=k) for k in (1, 3)), TISSUE.num_classes)
    segmenter = Segmenter(head, TISSUE, INPUT_SPEC)
    labels = segmenter.segment(_grid_case("RAS")[0]).labels.array
    assert set(np.unique(labels)) <= {0, 1, 3}
    assert {1, 3} <= set(np.unique(labels))  # both members win somewhere


def test_largest_component_removes_islands() -> None:
    image, expected = _phantom()
    island = (slice(4, 6), slice(22, 24), slice(12, 14))  # white matter far from the white-matter box
    image[island] = CLASS_INTENSITY[3]
    volume = Image(image, np.eye(4))
    assert (_multiclass().segment(volume).labels.array[island] == 3).all()
    cleaned = _multiclass().segment(volume, largest_component=True).labels.array
    assert np.array_equal(cleaned, expected)  # the island's next best class is background


def test_keep_largest_components_gives_removed_voxels_their_next_best_class() -> None:
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[0:3, 0:3, 0:3] = 1
    labels[5, 5, 5] = 1
    scores = np.zeros((6, 6, 6, 3), np.float32)
    scores[..., 0] = 0.2
    scores[5, 5, 5] = [0.1, 0.6, 0.3]
    cleaned = keep_largest_components(labels, scores, [1, 2])
    assert cleaned[5, 5, 5] == 2 and (cleaned[0:3, 0:3, 0:3] == 1).all()
    assert int((cleaned == 1).sum()) == 27


def test_a_constant_image_is_a_one_line_error_naming_the_file(tmp_path: Path) -> None:
    path = save_volume(Image(np.full((12, 12, 12), 3.0, np.float32), np.eye(4)), tmp_path / "flat.nii.gz")
    with pytest.raises(VolumeError, match=r"^.*flat\.nii\.gz: .*constant") as caught:
        _multiclass().segment_file(path)
    assert "\n" not in str(caught.value)


def test_segment_refuses_a_4d_image() -> None:
    with pytest.raises(ImageError, match="3D"):
        _multiclass().segment(Image(np.zeros((8, 8, 8, 2), np.float32), np.eye(4)))


@pytest.mark.parametrize(
    ("build", "phrase"),
    [
        (lambda: SoftmaxHead((), workers=1), "one multi-class network"),
        (lambda: SoftmaxHead((_network(_softmax_network, 4),) * 2, workers=1), "one multi-class network"),
        (lambda: SoftmaxHead((_network(_softmax_network, 4),), workers=0), "workers"),
        (lambda: SigmoidEnsembleHead((), 4), "at least one single-class network"),
        (lambda: SigmoidEnsembleHead((_network(_member(1), 1),), 4), "class index"),
        (lambda: SliceInferer(SliceSpec(2, 1, 8, 4), batch_size=0, workers=1), "batch_size"),
        (lambda: SliceInferer(SliceSpec(2, 1, 8, 4), batch_size=2, workers=0), "workers"),
        (lambda: Segmenter(_multiclass().head, TISSUE, INPUT_SPEC, InferenceConfig(workers=0)), "workers"),
    ],
)
def test_heads_inferers_and_segmenter_check_their_arguments(build, phrase: str) -> None:
    with pytest.raises(ValueError, match=phrase):
        build()


def test_a_network_of_the_wrong_shape_is_the_bundles_fault_not_the_scans(tmp_path: Path) -> None:
    def wrong(batch: np.ndarray) -> np.ndarray:  # one channel where the head expects four
        return np.zeros((*batch.shape[:3], 1), np.float32)

    segmenter = Segmenter(SoftmaxHead((_network(wrong, 4),), workers=1), TISSUE, INPUT_SPEC)
    path = save_volume(_grid_case("LIA")[0], tmp_path / "scan.nii.gz")
    with pytest.raises(BundleError) as caught:
        segmenter.segment_file(path, with_scores=True)
    message = str(caught.value)
    assert message.startswith(f"{STAND_IN}: ") and "scan.nii.gz" not in message and "\n" not in message
    assert not isinstance(caught.value, VolumeError)


def test_written_header_does_not_carry_the_input_header(tmp_path: Path) -> None:
    image, _ = _phantom()
    nifti = nib.Nifti1Image(image, np.eye(4))
    nifti.header["descrip"] = b"Doe^Jane 1970-01-01"
    nifti.header["db_name"] = b"MRN12345"
    nifti.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"patient: Doe^Jane"))
    nib.save(nifti, tmp_path / "input.nii.gz")
    loaded, segmentation = _multiclass().segment_file(tmp_path / "input.nii.gz")
    save_volume(segmentation.label_values(), tmp_path / "labels.nii.gz", "label")
    header = nib.load(tmp_path / "labels.nii.gz").header
    assert header["descrip"].tobytes().strip(b"\0") == b""
    assert header["db_name"].tobytes().strip(b"\0") == b""
    assert len(header.extensions) == 0


@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
@pytest.mark.parametrize("mode", ["slices", "patches"])
def test_tiny_real_bundles_of_both_reading_modes_segment_through_from_bundle(mode: str, tmp_path: Path) -> None:
    import keras

    from brainseg_tf.bundle import write_model_bundle
    from brainseg_tf.config import Config
    from brainseg_tf.models import build_segmenter

    keras.utils.set_random_seed(0)
    config = Config().replace({"model.base_filters": 4, "model.depth": 2, "generator.mode": mode, "generator.patch_shape": [16, 16, 16]})
    shape = (None, None, 3) if mode == "slices" else (None, None, None, 1)
    model = build_segmenter("multiclass", shape, TISSUE.num_classes, config.model)
    bundle = write_model_bundle(tmp_path / mode, model, family="multiclass", label_set=TISSUE, config=config, metrics={})
    image, _ = _grid_case("LIA")
    segmenter = Segmenter.from_bundle(bundle)
    segmentation = segmenter.segment(image, with_scores=True)
    assert segmentation.labels.array.shape == image.array.shape and np.array_equal(segmentation.labels.affine, image.affine)
    assert np.allclose(segmentation.scores.array.sum(axis=-1), 1.0, atol=1e-4)  # softmax survives blending and resampling
    assert np.array_equal(segmenter.segment(image).labels.array, segmentation.labels.array)  # labels alone: the same
    assert (segmenter.head.networks[0].predict_labels is not None) == (mode == "slices")
