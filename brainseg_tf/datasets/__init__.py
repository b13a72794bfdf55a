"""Datasets: the embedded MNI152-derived subjects, user manifests and FreeSurfer imports, all cached as HDF5."""

from brainseg_tf.datasets.build import build_cache
from brainseg_tf.datasets.cache import SPLITS, CacheInfo, Subject, read_info, read_subjects, write_cache
from brainseg_tf.datasets.prepare import prepare_subject
from brainseg_tf.datasets.sources import SourceRecord, assign_splits, discover_freesurfer, read_manifest

__all__ = [
    "SPLITS",
    "CacheInfo",
    "SourceRecord",
    "Subject",
    "assign_splits",
    "build_cache",
    "discover_freesurfer",
    "prepare_subject",
    "read_info",
    "read_manifest",
    "read_subjects",
    "write_cache",
]
