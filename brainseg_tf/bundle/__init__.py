"""Model bundles: the one contract between training and inference, readable without the training code.

A bundle is a folder::

    bundle.json        format_version, kind ("model" | "ensemble"), family ("multiclass" | "single_class"),
                       class_index, label_set, input_spec, config, metrics, versions, git_commit, created
                       (+ members: [{name, class_index, path, sha256}] for an ensemble)
    model.keras        kind "model": architecture + weights, spatial sizes unknown, no optimizer state
    saved_model/       kind "model": TensorFlow SavedModel, signature "serving_default":
                       image float32 (None, ..., C) -> {"probabilities": float32 (None, ..., K)}
    members/<name>/    kind "ensemble": one complete single_class "model" bundle per class
    brain_extractor/   optional (format 2): a single_class "model" bundle on the "brain" label set, run
                       first; bundle.json records it as brain_extractor: {path, sha256}
    manifest.sha256    "<sha256>  <path>" for every other file, sorted (sha256sum format)

Writers stage everything in a hidden sibling folder and rename it into place, so a crashed write
leaves nothing that looks finished. Readers verify the manifest before trusting any file. Importing
this package imports neither Keras nor TensorFlow; `load_serving_function` needs TensorFlow only.
"""

from brainseg_tf.bundle.extractor import attach_brain_extractor
from brainseg_tf.bundle.load import ServingFunction, load_keras_model, load_serving_function
from brainseg_tf.bundle.manifest import check_manifest, sha256_file, write_manifest
from brainseg_tf.bundle.spec import FORMAT_VERSION
from brainseg_tf.bundle.verify import BundleInfo, read_bundle_info, verify_bundle
from brainseg_tf.bundle.write import write_ensemble_bundle, write_model_bundle

__all__ = [
    "FORMAT_VERSION",
    "attach_brain_extractor",
    "BundleInfo",
    "ServingFunction",
    "check_manifest",
    "load_keras_model",
    "load_serving_function",
    "read_bundle_info",
    "sha256_file",
    "verify_bundle",
    "write_ensemble_bundle",
    "write_manifest",
    "write_model_bundle",
]
