"""A user's project: the kprobes fixture comes from kprobegen's pytest plugin (installed with
kprobegen, registered through the pytest11 entry point); nothing to import here.

Run it with `pytest` in this folder (the full Debian guest is booted once for the session),
or `pytest --kprobegen-target=host` on a machine that can load modules."""

from pathlib import Path

import pytest

SPECS = Path(__file__).parent / "specs"


@pytest.fixture
def specs() -> Path:
    return SPECS
