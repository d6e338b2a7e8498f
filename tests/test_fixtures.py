"""The shipped reference fixtures are complete, unchanged and described by their README."""
import fnmatch
import hashlib
import re

from tests.helpers.fixtures import FIXTURES, fixture_dir


def _manifest():
    lines = (FIXTURES / "SHA256SUMS").read_text().split("\n")
    return dict(reversed(line.split("  ", 1)) for line in lines if line.strip())


def test_every_fixture_matches_its_digest():
    manifest = _manifest()
    on_disk = {p.relative_to(FIXTURES).as_posix() for p in fixture_dir().iterdir()}
    assert on_disk == set(manifest)
    assert len(manifest) == 14
    for rel, digest in manifest.items():
        assert hashlib.sha256((FIXTURES / rel).read_bytes()).hexdigest() == digest, rel


def test_readme_describes_every_fixture():
    readme = (FIXTURES / "README.md").read_text()
    named = set(re.findall(r"`([a-z0-9_]+(?:_\*|\.[a-z]+))`", readme))
    for rel in _manifest():
        name = rel.split("/")[-1]
        # the README names a group `X_tiny_*` for X_tiny.safetensors, X_tiny_config.json, ...
        assert any(fnmatch.fnmatch(name, p.replace("_*", "*")) for p in named), \
            f"{name} is not described in tests/fixtures/README.md"
