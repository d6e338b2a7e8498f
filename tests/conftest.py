"""Shared test fixtures: the reference fixtures' folder ``tests/fixtures/`` (shipped in the repo)."""
import pytest

from tests.helpers.fixtures import FIXTURES, fixture_dir


@pytest.fixture
def fixtures_dir():
    fixture_dir()           # fails (not skips) when the shipped fixtures are missing
    return FIXTURES
