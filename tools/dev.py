#!/usr/bin/env python3
"""The two commands of the quick start, with all the set-up they need: `./dev demo [DEMO OPTIONS]` runs the demo,
`./dev test [PYTEST ARGS]` runs the tests (`./dev setup` only sets up). Each creates the project's environment
(.venv) when it is missing and installs the package with the CI constraints when pyproject.toml or
constraints/ci.txt changed since the last install; otherwise it starts at once. Needs only Python >= 3.10.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
EXTRAS = "cpu,train,report,dev,serve"  # what the tests use (CI installs the same)
STAMP = VENV / ".fcn-deploy-install"  # what the last install was made from
USAGE = "usage: ./dev demo [DEMO OPTIONS] | ./dev test [PYTEST ARGS] | ./dev setup"


def say(text: str) -> None:
    print(f"dev: {text}", file=sys.stderr, flush=True)


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def install_key() -> str:
    """The inputs of an install: a change to any of them installs again."""
    h = hashlib.sha256(f"{sys.version_info[:2]} {EXTRAS}".encode())
    for name in ("pyproject.toml", "constraints/ci.txt"):
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def pip(python: Path, args: list[str]) -> None:
    """pip install ARGS; its and the build backend's chatter (index notices, setuptools' editable-install banner)
    is shown only when the install fails, so a clean run prints our lines alone."""
    cmd = [str(python), "-m", "pip", "install", "-q", *args]
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout)
        sys.exit(f"dev: the install failed (pip's message above); rerun after fixing it: {' '.join(cmd)}")


def setup() -> Path:
    if sys.version_info < (3, 10):  # noqa: UP036 (this script may be started by an older python3)
        sys.exit(f"dev: Python >= 3.10 needed, this is {sys.version.split()[0]}; run it with a newer python3")
    python = venv_python()
    if not python.is_file():
        say(f"creating the environment {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
        pip(python, ["-U", "pip"])
    key = install_key()
    if STAMP.is_file() and STAMP.read_text().strip() == key:
        return python
    say(f"installing fcn-deploy[{EXTRAS}] with constraints/ci.txt into {VENV} (once; a few minutes)")
    pip(python, ["-c", "constraints/ci.txt", "-e", f".[{EXTRAS}]"])
    STAMP.write_text(key + "\n")
    return python


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "setup"):
        print(USAGE, file=sys.stderr)
        return 2
    python = setup()
    what, rest = argv[0], argv[1:]
    if what == "setup":
        return 0
    env = dict(os.environ, VIRTUAL_ENV=str(VENV), PATH=f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if what == "demo":
        cmd = [str(python), "-m", "fcn_deploy", "demo", *rest]
    else:
        cmd = [str(python), "-m", "pytest", "-q", *rest]
    return subprocess.run(cmd, cwd=ROOT if what == "test" else None, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
