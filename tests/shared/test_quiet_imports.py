"""Berth's processes import asyncssh without a warning a user would see.

cryptography >= 51 warns on any touch of its DSA classes, and asyncssh names them
at import; ``shared/__init__.py`` drops exactly that warning. A fresh interpreter
with every warning an error proves it (pytest's own filters cannot: they are
pyproject's, not the processes').
"""

import subprocess
import sys


def test_importing_berth_and_asyncssh_raises_no_warning() -> None:
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import shared, asyncssh, cli.main"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_other_warnings_from_asyncssh_still_show() -> None:
    # The filter is for one message: anything else asyncssh warns about is kept.
    code = (
        "import shared, warnings, sys\n"
        "warnings.warn_explicit('something else', UserWarning, 'x.py', 1, module='asyncssh.misc')\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "something else" in done.stderr
