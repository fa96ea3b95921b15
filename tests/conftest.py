"""Session fixtures: the bundled model is exported to OpenVINO once and shared by the tests that need it."""

from pathlib import Path

import pytest

from nncf_hqq import cli


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """Export cache shared by the tests: the bundled model is exported to OpenVINO once per session."""
    return tmp_path_factory.mktemp("export-cache")


@pytest.fixture(scope="session")
def bundled_hqq(cache_dir, tmp_path_factory) -> Path:
    """`nncf-hqq compress` with no --src: the bundled SmolLM2-135M-Instruct, HQQ INT4."""
    dst = tmp_path_factory.mktemp("out") / "smollm2-hqq"
    assert cli.main(["compress", "--dst", str(dst), "--cache-dir", str(cache_dir)]) == 0
    return dst
