"""Starting a CLI as a person's terminal would, so Ctrl-C reaches it.

A shell without job control starts background commands with SIGINT and SIGQUIT
ignored, and a child inherits an ignored signal (Python keeps it ignored too).
A test suite launched that way (``make check &`` in a script) would then send
Ctrl-C to a CLI that cannot hear it, and wait for nothing. A foreground command
in a terminal has both at their defaults: :func:`foreground_signals` restores
them in the child before it runs.
"""

from __future__ import annotations

import signal


def foreground_signals() -> None:
    """``preexec_fn`` for :class:`subprocess.Popen`: SIGINT and SIGQUIT at their defaults."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
