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
