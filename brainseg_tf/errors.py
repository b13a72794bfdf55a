"""Error types raised at the library's boundaries; each message is one line a user can act on."""

from __future__ import annotations

from os import PathLike


class BrainsegError(Exception):
    """Base class of every error brainseg-tf raises on purpose."""


class VolumeError(BrainsegError, ValueError):
    """A volume file that cannot be used: names the file and the problem.

    Args:
        path: the offending file.
        problem: what is wrong, phrased as expected vs received where possible.
    """

    def __init__(self, path: str | PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Rebuilt from (path, problem), so the error survives worker processes (pickling).
        return (type(self), (self.path, self.problem))


class LabelError(BrainsegError, ValueError):
    """Label values that a label set cannot map."""


class ConfigError(BrainsegError, ValueError):
    """A configuration value outside what is accepted."""


class DatasetError(BrainsegError, ValueError):
    """A dataset manifest, import folder or cache that cannot be used."""


class BundleError(BrainsegError, ValueError):
    """A model bundle that cannot be written, verified or loaded: names the path and the problem.

    Args:
        path: the bundle, or the file inside it, that is wrong.
        problem: what is wrong, phrased as expected vs received where possible.
    """

    def __init__(self, path: str | PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (type(self), (self.path, self.problem))
