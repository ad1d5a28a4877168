"""Exceptions raised for user mistakes and bad files.

Every message says what is wrong, with which value, and what to do about it.
They subclass the built-in exception a user would expect (``ValueError``,
``FileNotFoundError``) so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class DebcrError(Exception):
    """Base class of all debcr errors."""


class DataError(DebcrError, ValueError):
    """An image, array or data file cannot be used as given."""


class ModelFileError(DebcrError, ValueError):
    """A model file or checkpoint is missing, corrupt or of the wrong kind."""


class ConfigError(DebcrError, ValueError):
    """A configuration value or key is invalid."""


class ModelNotFoundError(ModelFileError, FileNotFoundError):
    """A model named by a path that does not exist."""


class ExportError(DebcrError, RuntimeError):
    """A model could not be exported, or the export failed its check."""


class OutputError(DebcrError, OSError):
    """An output cannot be written: no space left, read-only file system, no permission.

    ``errno`` and ``filename`` are those of the failed write; the message is one sentence.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class OutputExistsError(OutputError, FileExistsError):
    """A file appeared at an output's path while the output was written; it was kept.

    The finished output was saved beside it, under the name the message gives.
    """
