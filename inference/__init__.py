"""Inference over trained bundles: `Segmenter`, ensemble fusion, outputs on the input's grid.

Built by the inference issue; today this package only reserves its place in the layout.
"""
