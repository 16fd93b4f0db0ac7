"""The scenarios of `specs/features/tasks/submit_and_stream.feature`,
on the shared cluster (see conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytest_bdd import scenarios

pytestmark = pytest.mark.integration

scenarios(
    str(Path(__file__).resolve().parents[4] / "specs/features/tasks/submit_and_stream.feature")
)
