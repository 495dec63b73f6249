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


@pytest.fixture
def single_thread():
    """Run a test with one intra-op thread, restoring the previous count afterwards.

    For tests that push thousands of tiny tensors through FFTs and optimisers: with intra-op
    threads on a busy 2-core machine each tiny op can cost milliseconds of thread hand-off
    instead of microseconds of work. Results do not depend on the thread count.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
