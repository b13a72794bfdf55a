"""Classical tissue classifiers on intensity alone, as context for the networks: Gaussian mixture and k-means.

Both work on a conformed, intensity-normalised T1 (float array in [0, 1], as `brainseg_tf.geometry.conform`
and `brainseg_tf.intensity.normalize_intensity` make it) and follow scikit-learn's estimator conventions:
``__init__`` only stores parameters, ``fit`` returns ``self``, learned attributes end in ``_``.

Recipe: the head mask is the largest 6-connected component of the voxels above ``threshold``; three
clusters are fitted to the intensities of (a seeded sample of) those voxels; sorted by mean intensity,
the darkest is CSF, the middle gray matter, the brightest white matter (T1 contrast). Every voxel
outside the mask is background (class 0). Classes are indices of `brainseg_tf.labels.TISSUE`.

The default threshold 0.1 sits above the background's Rician noise: at 0.05 (the networks' background
skipping) about an eighth of the air voxels of an embedded subject pass, and the darkest cluster
fits the noise instead of the CSF.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage
from sklearn.base import BaseEstimator
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture

from brainseg_tf.labels import TISSUE

logger = logging.getLogger(__name__)

TISSUE_BY_BRIGHTNESS: tuple[int, ...] = tuple(TISSUE.class_index(name) for name in ("CSF", "gray matter", "white matter"))
"""Class indices of the clusters sorted by mean T1 intensity, darkest first."""


def head_mask(image: np.ndarray, threshold: float, largest_component: bool = True) -> np.ndarray:
    """Voxels above ``threshold``, optionally only their largest 6-connected component (bool array)."""
    mask = np.asarray(image) > threshold
    if not largest_component or not mask.any():
        return mask
    components, count = ndimage.label(mask)
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    sizes[0] = 0
    return components == int(sizes.argmax())


class _IntensityClusterTissue(BaseEstimator):
    """Shared recipe; subclasses say which clusterer to fit and where its cluster means are."""

    fitted_parameters = 0

    def __init__(self, threshold: float = 0.1, largest_component: bool = True, max_samples: int = 200_000, random_state: int = 0) -> None:
        self.threshold = threshold
        self.largest_component = largest_component
        self.max_samples = max_samples
        self.random_state = random_state

    def fit(self, image: np.ndarray, y: None = None) -> _IntensityClusterTissue:
        """Fit three clusters to the head voxels' intensities of one normalised image.

        Args:
            image: conformed, normalised T1, 3D float array.
            y: ignored (unsupervised); present for scikit-learn compatibility.

        Returns:
            self, with ``model_`` (the fitted clusterer), ``means_`` (cluster means, darkest first)
            and ``class_of_cluster_`` (the TISSUE class of each of the clusterer's clusters).

        Raises:
            ValueError: not a 3D array, or fewer head voxels than clusters.
        """
        intensities = self._head_intensities(image)
        rng = np.random.default_rng(self.random_state)
        if intensities.size > self.max_samples:
            intensities = rng.choice(intensities, self.max_samples, replace=False)
        self.model_ = self._make_model().fit(intensities[:, None])
        means = self._cluster_means(self.model_)
        order = np.argsort(means)
        self.class_of_cluster_ = np.empty(len(order), dtype=np.uint8)
        self.class_of_cluster_[order] = TISSUE_BY_BRIGHTNESS
        self.means_ = means[order]
        logger.debug("%s cluster means %s", type(self).__name__, np.round(self.means_, 3))
        return self

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Class indices (uint8, the image's shape): 0 outside the head mask, the cluster's class inside.

        Raises:
            ValueError: not fitted, not a 3D array, or fewer head voxels than clusters.
        """
        if not hasattr(self, "model_"):
            raise ValueError(f"Expected a fitted {type(self).__name__}. Received: call fit(image) first")
        mask = self._mask(image)
        classes = np.zeros(mask.shape, dtype=np.uint8)
        classes[mask] = self.class_of_cluster_[self.model_.predict(np.asarray(image)[mask][:, None].astype(np.float64))]
        return classes

    def fit_predict(self, image: np.ndarray, y: None = None) -> np.ndarray:
        """`fit` on the image, then `predict` it."""
        return self.fit(image).predict(image)

    def _mask(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim != 3:
            raise ValueError(f"Expected a 3D conformed image. Received: shape={image.shape}")
        return head_mask(image, self.threshold, self.largest_component)

    def _head_intensities(self, image: np.ndarray) -> np.ndarray:
        intensities = np.asarray(image)[self._mask(image)].astype(np.float64)
        if intensities.size < len(TISSUE_BY_BRIGHTNESS):
            raise ValueError(
                f"Expected at least {len(TISSUE_BY_BRIGHTNESS)} voxels above threshold={self.threshold}. Received: {intensities.size}"
            )
        return intensities

    def _make_model(self) -> GaussianMixture | KMeans:
        raise NotImplementedError

    def _cluster_means(self, model: GaussianMixture | KMeans) -> np.ndarray:
        raise NotImplementedError


class GaussianMixtureTissue(_IntensityClusterTissue):
    """Three-component Gaussian mixture on head-voxel intensities (`sklearn.mixture.GaussianMixture`).

    Args:
        threshold: normalised intensity above which a voxel may belong to the head.
        largest_component: keep only the largest connected component of those voxels.
        max_samples: at most this many head voxels (a seeded random sample) are used to fit.
        random_state: seeds the sample and the mixture's initialisation.
    """

    fitted_parameters = 3 * 3 - 1
    """Numbers fitted per volume: 3 means, 3 variances, 3 weights summing to 1."""

    def _make_model(self) -> GaussianMixture:
        return GaussianMixture(n_components=len(TISSUE_BY_BRIGHTNESS), random_state=self.random_state)

    def _cluster_means(self, model: GaussianMixture) -> np.ndarray:
        return model.means_[:, 0].copy()


class KMeansTissue(_IntensityClusterTissue):
    """Three-cluster k-means on head-voxel intensities (`sklearn.cluster.KMeans`): nearest mean wins.

    Args: as `GaussianMixtureTissue`.
    """

    fitted_parameters = 3
    """Numbers fitted per volume: the 3 cluster centres."""

    def _make_model(self) -> KMeans:
        return KMeans(n_clusters=len(TISSUE_BY_BRIGHTNESS), n_init=3, random_state=self.random_state)

    def _cluster_means(self, model: KMeans) -> np.ndarray:
        return model.cluster_centers_[:, 0].copy()
