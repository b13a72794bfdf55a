"""Packaging of the pl-brainseg-ensemble ChRIS plugin (metadata read by chris_plugin_info)."""

import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VERSION = re.search(r'^__version__ = "([0-9.]+)"', (HERE / "brainseg_ensemble.py").read_text(), re.MULTILINE).group(1)

setup(
    name="pl-brainseg-ensemble",
    version=VERSION,
    description="Brain tissue segmentation of T1 MRI (CSF, gray matter, white matter) with an ensemble of single-class TensorFlow networks",
    author="brainseg-tf developers",
    author_email="brainseg-tf@users.noreply.github.com",
    url="https://github.com/brainseg-tf/brainseg-tf/tree/main/chris_plugins/pl-brainseg-ensemble",
    license="MIT",
    py_modules=["brainseg_ensemble"],
    install_requires=["chris_plugin==0.4.0", "brainseg-tf"],
    entry_points={"console_scripts": ["brainseg_ensemble = brainseg_ensemble:main"]},
    python_requires=">=3.10",
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Environment :: Console",
        "Intended Audience :: Science/Research",
        "Intended Audience :: Healthcare Industry",
        "License :: OSI Approved :: MIT License",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Bio-Informatics",
        "Topic :: Scientific/Engineering :: Image Processing",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
    # As the ChRIS template: `none` for the image's default build argument, `dev` for its test image
    # (docker/plugins/Dockerfile, ARG extras_require); versions come from the repository's constraints.txt.
    extras_require={
        "none": [],
        "dev": ["pytest>=8", "pytest-timeout>=2.3"],
    },
)
