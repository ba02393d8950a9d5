"""Settings from the environment, read in one place."""
import pytest

from vqpaper import settings as S
from vqpaper.errors import ConfigError


def test_settings_read_every_variable_stripped_and_empty_means_unset():
    env = {name: "" for name in S.VARIABLES}
    env.update(VQPAPER_CIFAR10=" /data/c.npz ", VQPAPER_THREADS="3", VQPAPER_NO_CACHE="yes", RAY_ADDRESS="",
               VQPAPER_PRECISION="bf16")
    s = S.settings(env)
    assert s.cifar10 == "/data/c.npz" and s.threads == 3 and s.no_cache and s.precision == "bf16"
    assert s.ray_address == "" and s.executor == "" and S.settings({}).threads is None
    assert not S.settings({"VQPAPER_NO_CACHE": "0"}).no_cache


@pytest.mark.parametrize("text", ["0", "-1", "2.5", "many"])
def test_a_bad_thread_count_is_named(text):
    with pytest.raises(ConfigError, match=f"VQPAPER_THREADS must be a positive integer, got '{text}'"):
        S.settings({"VQPAPER_THREADS": text}).threads


def test_the_library_reads_the_environment_only_through_settings():
    """`os.environ` is read in settings.py alone (cli/runner set the kernels' environment; executors forward it)."""
    import re
    from pathlib import Path

    package = Path(S.__file__).parent
    readers = {p.name for p in package.glob("*.py")
               if re.search(r"os\.environ\.get\(|os\.getenv\(|os\.environ\[[^\]]+\](?!\s*=)", p.read_text())}
    # publish.py: the text of the notebooks' install cell, which reads VQPAPER_REPOSITORY in the kernel
    assert readers <= {"settings.py", "cli.py", "runner.py", "executors.py", "publish.py"}, readers
