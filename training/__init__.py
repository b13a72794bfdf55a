"""`python -m training`: data preparation and (later) training jobs over the brainseg_tf library."""
