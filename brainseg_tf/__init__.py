"""brainseg-tf: brain-MRI segmentation with TensorFlow/Keras, from notebook to ChRIS plugin."""

from brainseg_tf.config import Config, load_config
from brainseg_tf.errors import BrainsegError, BundleError, ConfigError, DatasetError, ImageError, LabelError, VolumeError
from brainseg_tf.io import Image, LabelMap, Volume, load_image, load_label_map, save_volume
from brainseg_tf.labels import ASEG, TISSUE, LabelSet, get_label_set
from brainseg_tf.preprocessing import InputSpec, Preprocessing

__version__ = "0.1.0"

__all__ = [
    "ASEG",
    "TISSUE",
    "BrainsegError",
    "BundleError",
    "Config",
    "ConfigError",
    "DatasetError",
    "Image",
    "ImageError",
    "InputSpec",
    "LabelError",
    "LabelMap",
    "LabelSet",
    "Preprocessing",
    "Volume",
    "VolumeError",
    "get_label_set",
    "load_config",
    "load_image",
    "load_label_map",
    "save_volume",
]
