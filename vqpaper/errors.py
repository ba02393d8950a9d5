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
        what = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum, f"an integer >= {minimum}")
        raise ConfigError(f"{name} must be {what}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={value:,} is too large (at most {maximum:,} is supported here)")
    return int(value)


def check_number(name, value, *, above=None, at_least=None, below=None):
    """``value`` as a float if it is a real number (not a bool) with ``value > above``, ``value >=
    at_least`` and ``value < below`` (each bound optional), else a ConfigError naming ``name``, the value
    and the allowed range: ``check_number("decay", d, above=0, below=1)``. The one such check."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value  # NaN fails
    ok = ok and (above is None or value > above) and (at_least is None or value >= at_least)
    ok = ok and (below is None or value < below)
    if not ok:
        if above is not None and below is not None:
            what = f"a number in ({above:g}, {below:g})"
        elif above == 0:
            what = "a positive number"
        elif at_least is not None:
            what = f"a number >= {at_least:g}"
        elif above is not None:
            what = f"a number > {above:g}"
        else:
            what = f"a number < {below:g}"
        raise ConfigError(f"{name} must be {what}, got {value!r}")
    return float(value)
