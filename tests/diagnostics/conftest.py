"""Fixtures for the diagnostics tests: the corpus of broken endpoints is built once per session."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from .corpus import NGINX, Corpus


def need(tool: str) -> str:
    """The path of a real component; under CI a missing one FAILS the test instead of skipping it."""
    path = shutil.which(tool) or (NGINX if tool == "nginx" else None)
    if not path:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{tool} is required under CI=true but is not installed")
        pytest.skip(f"{tool} not installed")
    return path


def run_sh(command: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a printed command exactly as a user would: under sh."""
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    need("openssl")
    c = Corpus(tmp_path_factory.mktemp("corpus"), with_nginx=NGINX is not None)
    yield c
    c.close()
