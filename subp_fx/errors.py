"""Errors a user can fix. The CLI prints them as one paragraph and exits with status 2."""


class SubpError(Exception):
    """Base of every error caused by user input (recipe, data, checkpoint, model)."""


class ConfigError(SubpError):
    """A recipe or config value is malformed or out of range."""


class DataError(SubpError):
    """A dataset is missing, empty or malformed."""


class CheckpointError(SubpError):
    """A checkpoint is missing, corrupt or does not fit the model."""


class UntraceableModelError(SubpError):
    """torch.fx cannot trace the model."""


class SelectionError(SubpError):
    """A layer selection asks for something impossible (e.g. N not dividing C_out)."""


class ConversionError(SubpError):
    """A model cannot be turned into its compact inference form (a non-uniform block mask, a batch
    norm still in training mode, ...)."""


class UnsupportedOpError(SubpError):
    """A model holds ops the compiler cannot lower; the message lists every one of them (node,
    op, target, module type, why) and what is supported."""


class ArtifactError(SubpError):
    """A compiled-model directory cannot be written (it exists, and overwriting was not asked
    for) or read (missing or malformed files)."""


class CompiledInputError(SubpError, ValueError):
    """An input given to a compiled model does not match what it was compiled for."""


class CalibrationError(SubpError, ValueError):
    """Calibration data for an int8 build is unusable: an empty set, batches of the wrong rank,
    channel count or size, or values that are not finite."""
