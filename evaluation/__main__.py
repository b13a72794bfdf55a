"""Entry point of `python -m evaluation`."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from evaluation.cli import main  # noqa: E402

sys.exit(main())
