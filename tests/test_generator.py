"""The shared data generator: shapes, seeding, family equivalence, sampling, augmentation and argument checks."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from brainseg_tf.config import AugmentConfig, GeneratorConfig
from brainseg_tf.data import (
    SampleSource,
    TargetEncoding,
    describe_sample_spec,
    make_dataset,
    steps_per_epoch,
)
from brainseg_tf.data.sampling import crop, resample_box
from brainseg_tf.datasets.cache import Subject
from brainseg_tf.errors import ConfigError, DatasetError
from brainseg_tf.labels import LabelSet

SHAPE = (24, 28, 20)
LABELS = LabelSet(name="toy", values=(0, 1, 2, 3), names=("background", "left", "right", "tiny"), lr_pairs=((1, 2),))
NO_AUGMENTATION = AugmentConfig(
    flip_probability=0.0, max_rotation_deg=0.0, max_scale=0.0, gamma_log_std=0.0, intensity_scale=0.0, noise_std=0.0
)


def toy_subject(number: int) -> Subject:
    """Random image; a ball split into class 1 (i < 12, left) and 2 (i >= 12, right); a 2x2x2 cube of class 3."""
    rng = np.random.default_rng(number)
    grid = np.indices(SHAPE)
    centre = np.array(SHAPE)[:, None, None, None] / 2 + rng.integers(-2, 3, size=(3, 1, 1, 1))
    ball = ((grid - centre) ** 2).sum(axis=0) < 8.0**2
    classes = np.where(ball, np.where(grid[0] < 12, 1, 2), 0).astype(np.uint8)
    classes[14:16, 6:8, 4:6] = 3
    image = rng.random(SHAPE, dtype=np.float32)
    return Subject(f"toy{number}", image, classes, np.eye(4), "train")


@pytest.fixture(scope="module")
def subjects() -> list[Subject]:
    return [toy_subject(n) for n in range(3)]


def small_config(**changes) -> GeneratorConfig:
    base = GeneratorConfig(
        slice_shape=(16, 16), patch_shape=(8, 12, 8), batch_size=4, samples_per_epoch=8, parallel_calls=2, seed=3
    )
    return dataclasses.replace(base, **changes)


def batches(dataset: tf.data.Dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), y.numpy()) for x, y in dataset]


SHAPE_CASES = [
    ({"mode": "slices", "slice_axis": 0, "context": 0}, (16, 16, 1)),
    ({"mode": "slices", "slice_axis": 1, "context": 2}, (16, 16, 5)),
    ({"mode": "slices", "slice_axis": 2, "context": 1}, (16, 16, 3)),
    ({"mode": "slices", "slice_axis": 2, "context": 2}, (16, 16, 5)),
    ({"mode": "patches"}, (8, 12, 8, 1)),
]


@pytest.mark.parametrize(("changes", "input_shape"), SHAPE_CASES)
@pytest.mark.parametrize("encoding", [TargetEncoding.softmax(), TargetEncoding.sigmoid(2)], ids=lambda e: e.name)
def test_batches_have_static_shapes_and_float32(subjects, changes, input_shape, encoding):
    config = small_config(**changes)
    channels = 4 if encoding.kind == "softmax" else 1
    dataset = make_dataset(subjects, LABELS, config, encoding)
    inputs_spec, targets_spec = dataset.element_spec
    assert tuple(inputs_spec.shape) == (4, *input_shape) and inputs_spec.dtype == tf.float32
    assert tuple(targets_spec.shape) == (4, *input_shape[:-1], channels) and targets_spec.dtype == tf.float32
    spec = describe_sample_spec(config, LABELS, encoding)
    assert spec.input_shape == input_shape and spec.target_shape == (*input_shape[:-1], channels)
    found = batches(dataset)
    assert len(found) == steps_per_epoch(config) == 2
    assert all(x.shape == (4, *input_shape) and x.dtype == np.float32 and np.isfinite(x).all() for x, _ in found)


@pytest.mark.parametrize("augment", [True, False])
def test_softmax_targets_are_one_hot(subjects, augment):
    for _, targets in batches(make_dataset(subjects, LABELS, small_config(), TargetEncoding.softmax(), augment=augment)):
        assert set(np.unique(targets)) <= {0.0, 1.0}
        np.testing.assert_array_equal(targets.sum(axis=-1), 1.0)


@pytest.mark.parametrize("mode", ["slices", "patches"])
def test_same_seed_gives_identical_batches_and_another_seed_differs(subjects, mode):
    def draw(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
        return batches(make_dataset(subjects, LABELS, small_config(mode=mode, seed=seed), TargetEncoding.softmax()))

    first, again, other = draw(5), draw(5), draw(6)
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not all(np.array_equal(x1, x3) for (x1, _), (x3, _) in zip(first, other))


@pytest.mark.parametrize("mode", ["slices", "patches"])
def test_sigmoid_datasets_draw_the_softmax_samples(subjects, mode):
    config = small_config(mode=mode)
    softmax = batches(make_dataset(subjects, LABELS, config, TargetEncoding.softmax()))
    for k in LABELS.foreground_classes:
        sigmoid = batches(make_dataset(subjects, LABELS, config, TargetEncoding.sigmoid(k)))
        for (xs, ys), (xk, yk) in zip(softmax, sigmoid):
            np.testing.assert_array_equal(xs, xk)
            np.testing.assert_array_equal(ys[..., k : k + 1], yk)


def test_repeating_dataset_walks_through_epochs(subjects):
    config = small_config(samples_per_epoch=10)  # 2 batches per epoch, the remaining 2 samples are dropped
    stream = batches(make_dataset(subjects, LABELS, config, TargetEncoding.softmax(), epoch=1, repeat=True).take(4))
    expected = [b for e in (1, 2) for b in batches(make_dataset(subjects, LABELS, config, TargetEncoding.softmax(), epoch=e))]
    for (x1, y1), (x2, y2) in zip(stream, expected, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(stream[0][0], stream[2][0])


def test_repeating_dataset_feeds_keras_fit(subjects):
    config = small_config()
    dataset = make_dataset(subjects, LABELS, config, TargetEncoding.softmax(), repeat=True)
    inputs = keras.Input(describe_sample_spec(config, LABELS, TargetEncoding.softmax()).input_shape)
    model = keras.Model(inputs, keras.layers.Conv2D(4, 1, activation="softmax")(inputs))
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    history = model.fit(dataset, epochs=2, steps_per_epoch=steps_per_epoch(config), shuffle=False, verbose=0)
    assert len(history.history["loss"]) == 2


CROP_CASES = [
    {"mode": "slices", "slice_axis": 0, "context": 2},
    {"mode": "slices", "slice_axis": 1, "context": 1},
    {"mode": "slices", "slice_axis": 2, "context": 2, "slice_shape": (32, 40)},  # larger than the volume: padded
    {"mode": "patches", "patch_shape": (8, 12, 8)},
    {"mode": "patches", "patch_shape": (31, 9, 26)},
]


@pytest.mark.parametrize("changes", CROP_CASES)
def test_unaugmented_samples_are_exact_zero_padded_crops(subjects, changes):
    config = small_config(foreground_fraction=0.5, **changes)
    source = SampleSource(subjects, LABELS, config, augment=False)
    dataset = make_dataset(subjects, LABELS, config, TargetEncoding.softmax(), augment=False)
    for b, (inputs, targets) in enumerate(batches(dataset)):
        for j in range(config.batch_size):
            number, centre = source.location(0, b * config.batch_size + j)
            image, classes = expected_crop(subjects[number], centre, config)
            np.testing.assert_array_equal(inputs[j], image)
            np.testing.assert_array_equal(targets[j].argmax(axis=-1), classes)


def expected_crop(subject: Subject, centre: tuple[int, int, int], config: GeneratorConfig) -> tuple[np.ndarray, np.ndarray]:
    """The sample read by plain indexing of the zero-padded volume (the reference the generator must match)."""
    pad = 64
    image, classes = (np.pad(a, pad) for a in (subject.image, subject.classes))
    c = [v + pad for v in centre]
    if config.mode == "patches":
        box = tuple(slice(c[a] - n // 2, c[a] - n // 2 + n) for a, n in enumerate(config.patch_shape))
        return image[box][..., None], classes[box]
    axis, context = config.slice_axis, config.context
    box = [slice(c[a], c[a] + 1) for a in range(3)]
    for a, n in zip([a for a in range(3) if a != axis], config.slice_shape):
        box[a] = slice(c[a] - n // 2, c[a] - n // 2 + n)
    labels = np.squeeze(classes[tuple(box)], axis=axis)
    box[axis] = slice(c[axis] - context, c[axis] + context + 1)
    return np.moveaxis(image[tuple(box)], axis, -1), labels


def test_context_slices_beyond_the_volume_are_zero(subjects):
    config = small_config(slice_axis=2, context=2)
    source = SampleSource(subjects, LABELS, config, augment=False)
    image, _ = source.sampler.extract(0, (12, 14, 0))
    assert np.all(image[..., :2] == 0) and np.array_equal(image[..., 2], crop(subjects[0].image[:, :, 0], (12, 14), (16, 16)))


def test_foreground_centres_draw_present_classes_evenly(subjects):
    config = small_config(foreground_fraction=1.0)
    source = SampleSource(subjects, LABELS, config, augment=False)
    centre_classes = [source.sample(0, i)[1][8, 8] for i in range(300)]
    shares = np.bincount(centre_classes, minlength=4) / 300
    assert shares[0] == 0 and all(0.2 < share < 0.47 for share in shares[1:]), shares


@pytest.mark.parametrize("mode", ["slices", "patches"])
def test_tiny_class_appears_in_most_foreground_samples(mode):
    subject = toy_subject(0)
    tiny_only = Subject("tiny", subject.image, np.where(subject.classes == 3, 3, 0).astype(np.uint8), np.eye(4), "train")

    def share_with_tiny(fraction: float) -> float:
        config = small_config(mode=mode, foreground_fraction=fraction, samples_per_epoch=64)
        dataset = make_dataset([tiny_only], LABELS, config, TargetEncoding.sigmoid(3))
        return float(np.mean([t.reshape(len(t), -1).max(axis=1) for _, t in batches(dataset)]))

    assert share_with_tiny(1.0) > 0.9
    assert share_with_tiny(0.0) < share_with_tiny(1.0)


FLIP_CASES = [({"mode": "slices", "slice_axis": a, "context": 1}, a) for a in (0, 1, 2)] + [({"mode": "patches"}, 3)]


@pytest.mark.parametrize(("changes", "slice_axis"), FLIP_CASES, ids=["sagittal", "coronal", "axial", "patches"])
def test_flip_mirrors_left_right_and_swaps_paired_classes(subjects, changes, slice_axis):
    flip_only = dataclasses.replace(NO_AUGMENTATION, flip_probability=1.0)
    config = small_config(augment=flip_only, foreground_fraction=1.0, **changes)
    plain = SampleSource(subjects, LABELS, config, augment=False)
    flipped = SampleSource(subjects, LABELS, config, augment=True)
    swap = np.array([0, 2, 1, 3])
    for i in range(12):
        (image, labels), (image_f, labels_f) = plain.sample(0, i), flipped.sample(0, i)
        if slice_axis == 0:  # sagittal: the mirrored slice position; neighbours swap sides
            np.testing.assert_array_equal(image_f, image[..., ::-1])
            np.testing.assert_array_equal(labels_f, swap[labels])
        else:
            np.testing.assert_array_equal(image_f, image[::-1])
            np.testing.assert_array_equal(labels_f, swap[labels[::-1]])
            assert_left_class_left_of_right_class(labels_f)


def assert_left_class_left_of_right_class(labels: np.ndarray) -> None:
    """Array axis 0 runs towards the subject's right: a mirrored brain still has left before right."""
    left, right = np.nonzero(labels == 1)[0], np.nonzero(labels == 2)[0]
    if left.size and right.size:
        assert left.max() < right.min()


@pytest.mark.parametrize("mode", ["slices", "patches"])
def test_augmented_samples_differ_and_keep_valid_labels(subjects, mode):
    config = small_config(mode=mode)
    plain = SampleSource(subjects, LABELS, config, augment=False)
    augmented = SampleSource(subjects, LABELS, config, augment=True)
    for i in range(8):
        (image, labels), (image_a, labels_a) = plain.sample(0, i), augmented.sample(0, i)
        assert image_a.shape == image.shape and labels_a.shape == labels.shape and image_a.dtype == np.float32
        assert not np.array_equal(image, image_a)
        assert labels_a.min() >= 0 and labels_a.max() < LABELS.num_classes


@pytest.mark.parametrize("size", [(1, 15, 9), (3, 7, 11)])
def test_resampling_through_identity_and_quarter_turn_is_exact(size):
    rng = np.random.default_rng(0)
    volume = rng.random((12, 20, 18), dtype=np.float32)
    centre = (5, 9, 8)
    np.testing.assert_array_equal(resample_box(volume, centre, size, np.eye(2), order=1), crop(volume, centre, size))
    turn = resample_box(volume, centre, size, np.array([[0.0, -1.0], [1.0, 0.0]]), order=1)
    _, h, w = size
    for t0 in range(h):
        for t1 in range(w):
            u0, u1 = t0 - h // 2, t1 - w // 2
            source = (centre[0], centre[1] - u1, centre[2] + u0)  # offset u reads matrix @ u = (-u1, u0)
            np.testing.assert_array_equal(turn[:, t0, t1], crop(volume, source, (size[0], 1, 1))[:, 0, 0])


def test_encode_matches_numpy_definitions():
    classes = np.array([[0, 1], [3, 2]], dtype=np.uint8)
    np.testing.assert_array_equal(TargetEncoding.softmax().encode(classes, 4).numpy(), np.eye(4, dtype=np.float32)[classes])
    sigmoid = TargetEncoding.sigmoid(3).encode(classes, 4).numpy()
    np.testing.assert_array_equal(sigmoid, (classes == 3)[..., None].astype(np.float32))


BAD_ENCODINGS = [
    (lambda: TargetEncoding.sigmoid(0), "class 0 is background"),
    (lambda: TargetEncoding.sigmoid(-1), "class_index=-1"),
    (lambda: TargetEncoding.sigmoid(True), "class_index=True"),
    (lambda: TargetEncoding("tanh"), "kind='tanh'"),
    (lambda: TargetEncoding("softmax", 2), "no class_index"),
    (lambda: TargetEncoding.sigmoid(4).check(4), r"class_index in \[1, 3\]"),
]


@pytest.mark.parametrize(("build", "message"), BAD_ENCODINGS)
def test_bad_encodings_are_refused(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


BAD_CONFIGS = [
    ({"slice_axis": 3}, "slice_axis=3"),
    ({"mode": "volumes"}, "mode='volumes'"),
    ({"context": -1}, "context=-1"),
    ({"slice_shape": (0, 16)}, "slice_shape"),
    ({"patch_shape": (8, 8)}, "patch_shape"),
    ({"foreground_fraction": 1.5}, "foreground_fraction=1.5"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"samples_per_epoch": 3}, "samples_per_epoch=3"),
    ({"parallel_calls": 0}, "parallel_calls=0"),
    ({"prefetch_batches": -2}, "prefetch_batches=-2"),
    ({"seed": -1}, "seed=-1"),
    ({"augment": AugmentConfig(flip_probability=2.0)}, "flip_probability=2.0"),
    ({"augment": AugmentConfig(max_scale=1.0)}, "max_scale=1.0"),
    ({"augment": AugmentConfig(noise_std=-0.1)}, "noise_std=-0.1"),
]


@pytest.mark.parametrize(("changes", "message"), BAD_CONFIGS)
def test_bad_generator_settings_are_refused(subjects, changes, message):
    with pytest.raises(ConfigError, match=message):
        make_dataset(subjects, LABELS, small_config(**changes), TargetEncoding.softmax())


def test_bad_dataset_arguments_are_refused(subjects):
    with pytest.raises(ConfigError, match=r"class_index in \[1, 3\]"):
        make_dataset(subjects, LABELS, small_config(), TargetEncoding.sigmoid(4))
    with pytest.raises(ConfigError, match="epoch=-1"):
        make_dataset(subjects, LABELS, small_config(), TargetEncoding.softmax(), epoch=-1)
    with pytest.raises(DatasetError, match="at least one subject"):
        make_dataset([], LABELS, small_config(), TargetEncoding.softmax())
    strange = Subject("strange", subjects[0].image, (subjects[0].classes * 2).astype(np.uint8), np.eye(4), "train")
    with pytest.raises(DatasetError, match="strange: Expected class indices below 4"):
        make_dataset([strange], LABELS, small_config(), TargetEncoding.softmax())


@pytest.mark.parametrize(("size", "angles"), [((3, 9, 11), (30.0,)), ((7, 9, 5), (20.0, -15.0, 10.0))], ids=["in-plane", "3d"])
def test_linear_resampling_reproduces_a_linear_ramp(size, angles):
    """Linear interpolation is exact on a linear function: checks rotation, scale and the interpolation weights."""
    gradient = np.array([0.5, -0.25, 0.75])
    volume = np.tensordot(gradient, np.indices((20, 22, 24)), axes=1).astype(np.float32)
    ndim = len(angles) if len(angles) == 3 else 2
    matrix = np.diag(np.full(ndim, 1.1))
    for plane, angle in zip([(0, 1), (0, 2), (1, 2)][: len(angles)], angles):
        rotation = np.eye(ndim)
        c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
        rotation[np.ix_(plane, plane)] = [[c, -s], [s, c]]
        matrix = rotation @ matrix
    centre = (10, 11, 12)
    out = resample_box(volume, centre, size, matrix, order=1)
    offsets = np.indices(size).reshape(3, -1) - (np.array(size) // 2)[:, None]
    positions = np.array(centre, dtype=float)[:, None] + offsets.astype(float)
    positions[3 - ndim :] = np.array(centre[3 - ndim :], dtype=float)[:, None] + matrix @ offsets[3 - ndim :]
    np.testing.assert_allclose(out.ravel(), gradient @ positions, atol=1e-3)


def test_intensity_augmentation_keeps_exact_zeros_and_noises_the_rest() -> None:
    from brainseg_tf.data.augmentation import Augmentation, adjust_intensity

    image = np.zeros((32, 32), np.float32)
    image[8:24, 8:24] = 0.5  # a stripped "brain" on exact zeros
    augmentation = Augmentation(matrix=None, flip=False, gamma=1.2, intensity_scale=0.9)
    out = adjust_intensity(image, np.random.default_rng(0), augmentation, noise_std=0.05)
    assert np.all(out[image == 0] == 0.0)  # a stripping tool's zeros carry no noise
    inside = out[image > 0]
    assert inside.std() > 0.03 and abs(inside.mean() - 0.9 * 0.5**1.2) < 0.01
