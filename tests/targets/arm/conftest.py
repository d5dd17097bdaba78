import os

import pytest

from edgecc.targets.arm import emulation


@pytest.fixture(scope="session")
def qemu():
    """The aarch64 emulation cache; CI must have it (scripts/setup.sh --test sets it up)."""
    if not emulation.ready():
        if os.environ.get("CI"):
            pytest.fail(f"arm64 emulation is not set up in CI: {emulation.why_not_ready()}")
        pytest.skip(emulation.why_not_ready())
    return emulation.default_cache()
