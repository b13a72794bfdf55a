"""Classical intensity classifiers on a tiny synthetic three-tissue volume with known classes."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from brainseg_tf.baselines import GaussianMixtureTissue, KMeansTissue, head_mask
from brainseg_tf.labels import TISSUE

CSF, GRAY, WHITE = (TISSUE.class_index(name) for name in ("CSF", "gray matter", "white matter"))
CLASSIFIERS = [GaussianMixtureTissue, KMeansTissue]


def _phantom(intensities: dict[int, float], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 24^3 ball: white core, gray shell, CSF rim; faint noise in the air around it. (image, classes)."""
    grid = np.indices((24, 24, 24)) - 11.5
    radius = np.sqrt((grid**2).sum(axis=0))
    classes = np.select([radius < 5, radius < 8, radius < 11], [WHITE, GRAY, CSF], 0).astype(np.uint8)
    rng = np.random.default_rng(seed)
    image = np.abs(rng.normal(0.0, 0.01, classes.shape))  # air: well below the threshold
    for index, value in intensities.items():
        inside = classes == index
        image[inside] = value + rng.normal(0.0, 0.03, int(inside.sum()))
    return image.astype(np.float32), classes


T1_CONTRAST = {CSF: 0.3, GRAY: 0.6, WHITE: 0.9}


@pytest.mark.parametrize("classifier", CLASSIFIERS)
def test_three_tissues_are_classified_exactly_and_the_air_is_background(classifier: type) -> None:
    image, classes = _phantom(T1_CONTRAST)
    fitted = classifier(random_state=0).fit(image)
    assert np.array_equal(fitted.predict(image), classes)
    assert np.all(np.diff(fitted.means_) > 0) and fitted.means_ == pytest.approx([0.3, 0.6, 0.9], abs=0.02)
    assert sorted(fitted.class_of_cluster_) == [CSF, GRAY, WHITE]


@pytest.mark.parametrize("classifier", CLASSIFIERS)
def test_classes_follow_brightness_not_position(classifier: type) -> None:
    inverted = {CSF: 0.9, GRAY: 0.6, WHITE: 0.3}  # the core is now the darkest tissue
    image, classes = _phantom(inverted)
    predicted = classifier().fit_predict(image)
    swapped = {CSF: WHITE, GRAY: GRAY, WHITE: CSF, 0: 0}
    assert np.array_equal(predicted, np.vectorize(swapped.get)(classes))


@pytest.mark.parametrize("classifier", CLASSIFIERS)
def test_fits_are_seeded_and_follow_estimator_conventions(classifier: type) -> None:
    image, _ = _phantom(T1_CONTRAST, seed=3)
    estimator = classifier(threshold=0.2, max_samples=500, random_state=7)
    assert estimator.get_params() == {"threshold": 0.2, "largest_component": True, "max_samples": 500, "random_state": 7}
    assert not hasattr(estimator, "means_")  # __init__ only stores parameters
    first, second = estimator.fit(image), clone(estimator).fit(image)
    assert first is estimator and np.array_equal(first.means_, second.means_)


def test_head_mask_keeps_the_largest_component_unless_asked_not_to() -> None:
    image, classes = _phantom(T1_CONTRAST)
    image[0, 0, 0] = 0.9  # a bright speck in the air, apart from the head
    assert np.array_equal(head_mask(image, 0.1), classes > 0)
    assert head_mask(image, 0.1, largest_component=False)[0, 0, 0]
    assert GaussianMixtureTissue().fit_predict(image)[0, 0, 0] == 0


@pytest.mark.parametrize(
    ("image", "message"),
    [(np.zeros((4, 4)), "3D"), (np.zeros((6, 6, 6)), "at least 3 voxels above")],
)
def test_bad_images_are_refused(image: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GaussianMixtureTissue().fit(image)


def test_predict_before_fit_is_refused() -> None:
    with pytest.raises(ValueError, match="fitted"):
        KMeansTissue().predict(np.zeros((6, 6, 6)))
