"""Shared pytest fixtures."""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def cifar_subset_path():
    """The real CIFAR-10 subset shared next to the repository (skips when absent)."""
    path = REPO.parent / "shared" / "data" / "cifar10-subset.npz"
    if not path.is_file():
        pytest.skip(f"real CIFAR-10 subset not found at {path}")
    return path
