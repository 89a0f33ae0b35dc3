"""Errors a user can act on: the CLI prints their message as one line, with no traceback."""


class LongtailError(Exception):
    """Bad input or an unreachable service, with a message that names the thing and the fix."""


class ConfigError(LongtailError):
    """An experiment config field is unknown, mistyped or out of range."""


class DataError(LongtailError):
    """A dataset, HDF5 split or CSV is missing or malformed."""


class StorageError(LongtailError):
    """Object storage (S3/MinIO) or a local path could not be read or written."""
