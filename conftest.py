"""Keep the suite hermetic: a user's `diffconv tune` cache must not steer "auto" in tests."""

import os
import tempfile


def pytest_configure(config):
    os.environ["DIFFCONV_CACHE_DIR"] = tempfile.mkdtemp(prefix="diffconv-test-cache-")
