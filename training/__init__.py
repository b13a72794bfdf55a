"""`python -m training`: data preparation and training jobs over the brainseg_tf library."""
