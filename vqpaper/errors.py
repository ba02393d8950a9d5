"""Exceptions with messages a user can act on (never a traceback from deep inside torch)."""
import numbers


class VQPaperError(Exception):
    """Base class for every error vqpaper raises on purpose."""


class ConfigError(VQPaperError, ValueError):
    """A parameter has a bad value: the message names it, the value and what is allowed."""


class DataNotFoundError(VQPaperError, FileNotFoundError):
    """A dataset could not be found in any of the places we looked."""


class DataFormatError(VQPaperError, ValueError):
    """A dataset file exists but has the wrong content (keys, shapes, dtypes, label range)."""


class TrainingDiverged(VQPaperError, RuntimeError):
    """The loss became NaN or infinite; ``history`` keeps what was recorded until then."""

    def __init__(self, message, history=None):
        super().__init__(message)
        self.history = list(history or [])


def check_positive_int(name, value, maximum=None, minimum=1):
    """``value`` as an int if it is an integer (numpy's too, not a bool) in ``minimum..maximum``,
    else a ConfigError naming ``name``, the value and what is allowed. The one such check."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{name} must be {what}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={value:,} is too large (at most {maximum:,} is supported here)")
    return int(value)
