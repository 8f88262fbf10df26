"""Session fixtures: the reference models, exported and extracted once into the model cache."""
from __future__ import annotations

import pytest

from weights.default_model import ModelPaths, ensure_model


@pytest.fixture(scope="session")
def tiny_model() -> ModelPaths:
    return ensure_model("tiny", seed=0)


@pytest.fixture(scope="session")
def aishell_model() -> ModelPaths:
    return ensure_model("aishell", seed=0)
