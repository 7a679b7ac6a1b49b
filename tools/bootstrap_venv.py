"""Create a virtual environment with pip, even where Debian's python3 lacks ensurepip.

Usage: python3 tools/bootstrap_venv.py .venv

Debian ships `ensurepip` in the separate python3-venv package. When it is missing we create the
venv without pip and install pip from its wheel on PyPI into it, so `make test` and `make demo`
work on a machine that has only python3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
import venv


def _has_ensurepip() -> bool:
    try:
        import ensurepip  # noqa: F401
    except ImportError:
        return False
    return True


def _install_pip_from_pypi(python: str) -> None:
    with urllib.request.urlopen("https://pypi.org/pypi/pip/json", timeout=60) as resp:
        meta = json.load(resp)
    wheel = next(
        f for f in meta["urls"] if f["packagetype"] == "bdist_wheel" and f["filename"].endswith(".whl")
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, wheel["filename"])
        urllib.request.urlretrieve(wheel["url"], path)
        # A pip wheel can run itself: python pip.whl/pip install pip.whl
        subprocess.check_call([python, os.path.join(path, "pip"), "install", "--no-index", path])


def main(target: str) -> None:
    with_pip = _has_ensurepip()
    venv.EnvBuilder(with_pip=with_pip, clear=False, symlinks=(os.name != "nt")).create(target)
    python = os.path.join(target, "bin", "python")
    if not with_pip:
        print("ensurepip is not available; installing pip from PyPI into", target)
        _install_pip_from_pypi(python)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".venv")
