"""`python -m evaluation`: bundles scored through inference, head to head with classical baselines.

Evaluation meets training only through the library (`brainseg_tf`) and the bundle format: it imports
`inference` and `brainseg_tf`, never `training`.
"""
