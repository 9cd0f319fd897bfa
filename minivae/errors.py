"""The exceptions minivae raises, in one place so users can catch them by name."""

from sklearn.exceptions import NotFittedError as _SklearnNotFittedError


class MinivaeError(Exception):
    """Base class of every minivae-specific error."""


class DeviceUnavailableError(MinivaeError, RuntimeError):
    """The requested device cannot be used here; the message says why and what to do."""


class NotPositiveDefiniteError(MinivaeError, ValueError):
    """A kernel matrix stayed non-positive-definite after the allowed jitter was added."""


class CheckpointError(MinivaeError, ValueError):
    """A checkpoint file is missing, corrupt, of another format version, or of another model."""


class TrainingDivergedError(MinivaeError, FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch and step."""


class DataError(MinivaeError, ValueError):
    """Input data are malformed: NaN/Inf, wrong shape or dtype, values out of range."""


class JitterWarning(UserWarning):
    """A Cholesky factorisation succeeded only after jitter was added to the diagonal."""


class NotFittedError(MinivaeError, _SklearnNotFittedError):
    """A model was used before :meth:`fit` (or before it had networks to use)."""
