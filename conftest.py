"""Suite-wide settings.

- Hermetic: a user's `diffconv tune` cache must not steer "auto" in tests.
- Reproducible: every test starts from the same random state, so a failure reproduces.
"""

import os
import random
import tempfile

import pytest


def pytest_configure(config):
    os.environ["DIFFCONV_CACHE_DIR"] = tempfile.mkdtemp(prefix="diffconv-test-cache-")


@pytest.fixture(autouse=True)
def _seed_everything():
    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
