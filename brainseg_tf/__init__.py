"""brainseg-tf: brain-MRI segmentation with TensorFlow/Keras, from notebook to ChRIS plugin."""

from brainseg_tf.config import Config, load_config
from brainseg_tf.errors import BrainsegError, ConfigError, DatasetError, LabelError, VolumeError
from brainseg_tf.io import Volume, load_image, load_label_map, save_volume
from brainseg_tf.labels import ASEG, TISSUE, LabelSet, get_label_set

__version__ = "0.1.0"

__all__ = [
    "ASEG",
    "TISSUE",
    "BrainsegError",
    "Config",
    "ConfigError",
    "DatasetError",
    "LabelError",
    "LabelSet",
    "Volume",
    "VolumeError",
    "get_label_set",
    "load_config",
    "load_image",
    "load_label_map",
    "save_volume",
]
