"""Error types raised at the library's boundaries; each message is one line a user can act on."""

from __future__ import annotations

from os import PathLike


class BrainsegError(Exception):
    """Base class of every error brainseg-tf raises on purpose."""


class PathError(BrainsegError, ValueError):
    """A file or folder that cannot be used; the message is ``"<path>: <problem>"``.

    Args:
        path: the offending file or folder.
        problem: what is wrong, phrased as expected vs received where possible.
    """

    def __init__(self, path: str | PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Rebuilt from (path, problem), so the error survives worker processes (pickling).
        return (type(self), (self.path, self.problem))


class VolumeError(PathError):
    """A volume file that cannot be read or written."""


class BundleError(PathError):
    """A model bundle (or a file inside it) that cannot be written, verified or loaded."""


class LabelError(BrainsegError, ValueError):
    """Label values that a label set cannot map."""


class ConfigError(BrainsegError, ValueError):
    """A configuration value outside what is accepted."""


class DatasetError(BrainsegError, ValueError):
    """A dataset manifest, import folder or cache that cannot be used."""


class ImageError(BrainsegError, ValueError):
    """An image in memory that the networks cannot take (not 3D, no contrast): the scan's fault, not the model's."""


class SeriesError(VolumeError):
    """A DICOM series that cannot be read as one 3D volume; ``path`` is its non-identifying key (e.g. ``series 7 #1a2b3c4d``)."""
