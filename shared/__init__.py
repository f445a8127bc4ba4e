"""Berth's bottom layer: models, settings, the state store and Kubernetes helpers.

Nothing here imports from ``api``, ``workers`` or ``cli``; the import-linter
contract in pyproject.toml keeps it that way.
"""
