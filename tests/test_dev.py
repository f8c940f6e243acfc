"""The quick start's `./dev` (tools/dev.py): usage, and the fast path when nothing needs installing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import dev  # noqa: E402


def test_unknown_command_prints_usage():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "dev.py"), "deploy"], capture_output=True, text=True)
    assert r.returncode == 2 and "./dev demo" in r.stderr and "./dev test" in r.stderr


def test_setup_installs_nothing_when_the_environment_is_current():
    if not dev.STAMP.is_file() or dev.STAMP.read_text().strip() != dev.install_key():
        pytest.skip("needs an environment set up by ./dev setup with this pyproject.toml and constraints/ci.txt")
    r = subprocess.run([str(ROOT / "dev"), "setup"], capture_output=True, text=True)
    assert r.returncode == 0 and "installing" not in r.stderr and "creating" not in r.stderr


def test_install_key_follows_pyproject_and_constraints(tmp_path, monkeypatch):
    for name in ("pyproject.toml", "constraints/ci.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("a")
    monkeypatch.setattr(dev, "ROOT", tmp_path)
    before = dev.install_key()
    (tmp_path / "constraints/ci.txt").write_text("torch==2.13.0")
    assert dev.install_key() != before
