"""Inference over trained bundles: whole-volume prediction (`inference.predict`) and fusion (`inference.fusion`).

`Segmenter`, outputs on the input's grid and `python -m inference` come with the inference issue.
"""
