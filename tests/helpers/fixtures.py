"""Where the reference fixtures live: ``tests/fixtures/`` inside the checkout (see its README)."""
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def fixture_dir(family="dynamicrafter"):
    """The folder of one family's fixtures; a missing folder is an error, never a skip (they
    ship with the repository, so their absence means a broken checkout)."""
    d = FIXTURES / family
    if not d.is_dir():
        raise FileNotFoundError(f"reference fixtures {d} are missing: they ship in tests/fixtures/ "
                                "(a partial or LFS-less checkout?)")
    return d
