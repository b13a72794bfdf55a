"""Peer brain extractors and classical tissue pipelines run beside brainseg-tf (`make peers`).

`peers.run_peers` runs inside the peers' own venv (outputs/peers/venv, from `peers/requirements.txt`) and
never imports brainseg_tf or TensorFlow; `peers.tissue` holds the pure numpy / scikit-learn logic both sides use.
"""
