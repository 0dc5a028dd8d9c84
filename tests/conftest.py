"""Shared fixtures: small, fast configurations on the built-in digits data."""

from __future__ import annotations

import pytest
import torch

from augdistill.data import load_dataset


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(autouse=True)
def _two_threads():
    torch.set_num_threads(2)


@pytest.fixture
def one_thread():
    """One thread for the test, restored after: tiny tensors run fastest on one, and stay fast on shared cores.
    A module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
