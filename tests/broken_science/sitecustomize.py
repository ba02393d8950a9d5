"""Deliberate scientific changes for the regression check's sensitivity suite (issue 20).

Python imports ``sitecustomize`` at start-up from the path, so a process started with this
folder on ``PYTHONPATH`` (the notebook kernel, which inherits its parent's environment) runs
with the change while the repository's code stays untouched. ``VQPAPER_BREAK`` names the
change (one of ``CHANGES``); ``VQPAPER_BREAK_LOG``, if set, is a file that receives one JSON
line per application, so ``benchmarks/sensitivity.py`` can tell "the check did not see it"
from "the patch point has gone" (a rewritten trainer that no longer calls it).

Patch points, chosen to survive a rewrite of ``train.py``/``quantizers.py``:

* run-config changes (decay, beta, kmeans-iters, lr, laplace, cifar-pretrain) wrap
  ``vqpaper.config.SyntheticRun.validate`` / ``CifarRun.validate``: every run config is
  validated where it is made (``experiments``, ``remedies``) and again by the trainer, so the
  change reaches every run whichever trainer reads the config. A changed value is stored as a
  marked subclass of its type (``_ChangedFloat(0.8)`` is a float equal to 0.8), so validating
  it again, or copying it with ``dataclasses.replace``, never applies the change twice;
* ``test-perplexity`` wraps the construction of ``vqpaper.train.RunResult`` (the trainer's
  output contract): a CIFAR-10 run's ``perplexity`` (the code computes it over the training
  images, ``train.run_cifar``) is replaced by its ``test_perplexity``, i.e. perplexity over
  the test images instead. Runs without ``test_perplexity`` (synthetic) are left alone.

The recorded parameters (``params`` of each figure) are the notebook's, not the run
configs', so none of these changes shows up as a changed parameter: only the science can
reveal it.
"""
import json
import os

_CHANGE = os.environ.get("VQPAPER_BREAK", "")


class _ChangedFloat(float):
    """A float this module produced (so it is never changed twice)."""


class _ChangedInt(int):
    """An int this module produced."""


class _ChangedStr(str):
    """A str this module produced."""


_MARKED = {float: _ChangedFloat, int: _ChangedInt, str: _ChangedStr}


def _log(**entry):
    path = os.environ.get("VQPAPER_BREAK_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"change": _CHANGE, "pid": os.getpid(), **entry}) + "\n")


def _halve_memory(decay):
    """EMA decay with half the memory: 1 - d doubled (0.9 -> 0.8 synthetic, 0.99 -> 0.98 CIFAR-10)."""
    return round(1 - 2 * (1 - decay), 12)


#: change -> (run-config classes, field, how the value changes, what it means)
CONFIG_CHANGES = {
    "decay": (("SyntheticRun", "CifarRun"), "decay", _halve_memory, "EMA decay 0.9 -> 0.8 (CIFAR-10 0.99 -> 0.98)"),
    "beta": (("SyntheticRun", "CifarRun"), "beta", lambda b: 4 * b, "commitment beta 0.25 -> 1.0"),
    "kmeans-iters": (("SyntheticRun", "CifarRun"), "kmeans_iters", lambda n: 1, "K-means iterations 10 -> 1"),
    "lr": (("SyntheticRun", "CifarRun"), "lr", lambda lr: lr / 2, "learning rate halved"),
    "laplace": (("SyntheticRun", "CifarRun"), "ema_update", lambda u: "laplace",
                "eq. (5) update replaced by the Laplace-smoothed one"),
    "cifar-pretrain": (("CifarRun",), "pretrain_epochs", lambda n: max(1, n // 2), "CIFAR-10 pretraining epochs halved"),
}
OTHER_CHANGES = {"test-perplexity": "CIFAR-10 perplexity over the test images instead of the training images"}
CHANGES = {**{k: v[3] for k, v in CONFIG_CHANGES.items()}, **OTHER_CHANGES}


def _patch_config(change):
    import vqpaper.config as config

    classes, name, how, _ = CONFIG_CHANGES[change]
    for cls_name in classes:
        cls = getattr(config, cls_name)
        original = cls.validate

        def validate(self, _original=original, _cls=cls_name):
            value = getattr(self, name)
            if not isinstance(value, tuple(_MARKED.values())):
                changed = how(value)
                marked = _MARKED[type(changed) if type(changed) in _MARKED else float](changed)
                object.__setattr__(self, name, marked)  # works on frozen dataclasses too
                _log(what=f"{_cls}.{name}", before=value, after=changed)
            return _original(self)

        cls.validate = validate


def _patch_test_perplexity():
    import vqpaper.train as train

    original = train.RunResult.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        metrics = self.metrics
        if isinstance(metrics, dict) and "test_perplexity" in metrics and "perplexity" in metrics:
            if metrics["perplexity"] != metrics["test_perplexity"]:
                _log(what="RunResult.metrics.perplexity", before=metrics["perplexity"],
                     after=metrics["test_perplexity"])
            metrics["perplexity"] = metrics["test_perplexity"]

    train.RunResult.__init__ = __init__


# SystemExit, not an exception, on any error: Python reports an exception raised in
# sitecustomize and runs on without the change, which would pass for a change the check
# cannot see.
if _CHANGE:
    if _CHANGE not in CHANGES:
        raise SystemExit(f"VQPAPER_BREAK={_CHANGE!r}: expected one of {sorted(CHANGES)}")
    try:
        if _CHANGE in CONFIG_CHANGES:
            _patch_config(_CHANGE)
        else:
            _patch_test_perplexity()
    except Exception as exc:  # a patch point that has gone (renamed class, method, module)
        raise SystemExit(f"VQPAPER_BREAK={_CHANGE!r}: cannot apply the change ({type(exc).__name__}: {exc}); "
                         f"update tests/broken_science/sitecustomize.py") from exc
