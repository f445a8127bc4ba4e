"""Berth's bottom layer: models, settings, the state store and Kubernetes helpers.

Nothing here imports from ``api``, ``workers`` or ``cli``; the import-linter
contract in pyproject.toml keeps it that way.
"""

import warnings

# cryptography 51 warns when anything touches its DSA classes, and asyncssh's own
# modules name them in type aliases at import. Berth never makes or accepts a DSA
# key, so the warning says nothing to a Berth user; it is dropped for exactly that
# message raised from asyncssh's modules and nowhere else.
warnings.filterwarnings(
    "ignore", message="DSA is deprecated", category=UserWarning, module=r"asyncssh\."
)
