"""``env`` entries without a value take it from the shell that runs ``berth apply``.

dstack's rule (``env: [HF_TOKEN]``): a variable named without a value must be set in
the submitter's environment, and the CLI fills it in; the server never sees the
shell. One that is not set is an error naming it, not a pod without the variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from shared.errors import ConfigError


def fill_from_shell(text: str, environ: Mapping[str, str]) -> str:
    """The configuration with every value-less ``env`` entry set from ``environ``."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # the server names the YAML error precisely
    if not isinstance(doc, dict) or not _has_bare(doc.get("env")):
        return text
    env = doc["env"]
    if isinstance(env, list):
        doc["env"] = [_filled_item(item, environ) for item in env]
    else:
        doc["env"] = {key: _filled(key, value, environ) for key, value in env.items()}
    return yaml.safe_dump(doc, sort_keys=False)


def _has_bare(env: Any) -> bool:
    if isinstance(env, list):
        return any(isinstance(item, str) and "=" not in item for item in env)
    if isinstance(env, dict):
        return any(value is None for value in env.values())
    return False


def _filled_item(item: Any, environ: Mapping[str, str]) -> Any:
    if not isinstance(item, str) or "=" in item:
        return item
    name = item.strip()
    return f"{name}={_filled(name, None, environ)}"


def _filled(name: Any, value: Any, environ: Mapping[str, str]) -> Any:
    if value is not None:
        return value
    if str(name) not in environ:
        raise ConfigError(
            f"env {name} has no value: set it in the shell that runs berth apply"
            f" (export {name}=...), give it one in the file, or use a secret"
            f" (berth secret set {name}; env: {{{name}: ${{{{ secrets.{name} }}}}}})",
            field="env",
        )
    return environ[str(name)]
