"""Inference over trained bundles: `Segmenter` (`inference.segmenter`), its heads and inferers, outputs,
`python -m inference` and what the ChRIS plugins share (`inference.plugin`)."""
