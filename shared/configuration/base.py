"""Plumbing shared by every configuration model: the base model, YAML loading, error mapping.

Design decision: a dstack key that Berth does not honour yet and a key nobody knows
are two different mistakes, so they get two different answers. Each model lists the
dstack keys it refuses (``dstack_only_fields``) and a before-validator checks every
key of the incoming mapping against that list and the model's own fields, so the
user reads either ``repos: not supported by Berth yet: repos`` or ``comands: unknown
field (did you mean commands?); accepted fields: ...``. ``extra="forbid"`` stays on
as the backstop.

Validators raise plain ``ValueError`` whose text already says what was given and
what is accepted; :func:`config_error_from_validation` turns pydantic's
``ValidationError`` into one :class:`~shared.errors.ConfigError` whose ``field`` is
the dotted YAML path (``resources.gpu``, ``projects.0.backends.0.kubeconfig``).
"""

from __future__ import annotations

import difflib
import re
import reprlib
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from shared.errors import ConfigError, NotSupportedError

NOT_SUPPORTED = "not_supported"
"""pydantic error type raised for a dstack key or value Berth does not honour yet."""

_FIELD_ERROR = "berth_field_error"  # pydantic error type of field_error(); carries a path
STORED = "stored"
"""Validation-context key: the data was written by Berth itself, so unknown keys are dropped."""
READING_STORED: ContextVar[bool] = ContextVar("berth_reading_stored", default=False)
"""True while :func:`~shared.configuration.parse.configuration_from_stored` validates.

Refusals added in a later release (a value form Berth used to accept) consult it,
so runs stored by an older Berth still load; plain validators have no context."""
# Enough neighbouring problems to be useful without burying the first one.
_MAX_EXTRA_PROBLEMS = 3
# Long inputs (a whole mapping, a script) are cut so the message stays one line.
_MAX_SHOWN_INPUT = 60
# A real configuration has hundreds of YAML nodes; anchors and aliases that expand
# past this are a "billion laughs" bomb, refused before anything walks the tree.
MAX_YAML_NODES = 100_000
MAX_YAML_DEPTH = 64  # dstack files nest a handful of levels
# Keys whose values may be secrets: a problem below them never echoes the value.
_SECRET_KEYS = frozenset({"password", "registry_auth", "env", "data", "token"})
# repr() of the whole input first would let an alias bomb expand inside the message.
_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = _REPR.maxother = _MAX_SHOWN_INPUT


class BerthModel(BaseModel):
    """Base of every configuration model: frozen, unknown keys refused by name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dstack_only_fields: ClassVar[frozenset[str]] = frozenset()
    """Keys dstack accepts here that Berth refuses with ``not supported by Berth yet``."""
    refusal_reasons: ClassVar[dict[str, str]] = {}
    """For some of ``dstack_only_fields``: why the key has no meaning on Kubernetes,
    appended to the refusal (``not supported by Berth yet: <key>: <why>``)."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_unhonoured_and_unknown_keys(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        if isinstance(info.context, dict) and info.context.get(STORED):
            # An older reader must survive data written by a newer Berth.
            return {k: v for k, v in data.items() if k in cls.model_fields}
        for key in data:
            if key in cls.dstack_only_fields:
                raise not_supported(str(key), value=cls.refusal_reasons.get(str(key)))
            if key not in cls.model_fields:
                raise field_error(str(key), _unknown_field_message(str(key), cls.model_fields))
        return data


def not_supported(field: str = "", *, value: str | None = None) -> PydanticCustomError:
    """An error for a dstack ``field`` (below the current location) or ``value`` Berth refuses.

    Raise it from a validator; :func:`config_error_from_validation` turns it into a
    :class:`NotSupportedError` whose message is ``not supported by Berth yet: <path>``,
    with ``: <value>`` appended when the field is fine but this value is not.
    """
    context: dict[str, str] = {"field": field}
    if value is not None:
        context["value"] = value
    return PydanticCustomError(NOT_SUPPORTED, "not supported by Berth yet", context)


def field_error(field: str, message: str) -> PydanticCustomError:
    """An error about ``field`` below the current location, for cross-field checks.

    A model validator that raises a plain ``ValueError`` is reported at the model's own
    path; raising this instead points the user at the field to change.
    """
    return PydanticCustomError(_FIELD_ERROR, "{message}", {"field": field, "message": message})


def load_yaml_mapping(text: str, *, source: str | None = None) -> dict[str, Any]:
    """Parse YAML ``text`` whose top level must be a mapping; ConfigError on any problem.

    Syntax errors and duplicate keys name their line and column (1-based).
    """
    where = f" in {source}" if source else ""
    try:
        data = yaml.load(text, Loader=_BerthLoader)  # a SafeLoader subclass: no arbitrary objects
    except RecursionError as e:
        raise ConfigError(f"invalid YAML{where}: nested too deeply") from e
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        position = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = e.problem or e.context or "malformed YAML"
        raise ConfigError(f"invalid YAML{where}{position}: {problem}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML{where}: {e}") from e
    if data is None:
        raise ConfigError(f"the configuration{where} is empty")
    if not isinstance(data, dict):
        raise ConfigError(
            f"expected a mapping of fields at the top level{where}, got {type(data).__name__}"
        )
    return data


def config_error_from_validation(
    error: ValidationError, *, source: str | None = None, data: dict[str, Any] | None = None
) -> ConfigError:
    """The first problem of ``error`` as a ConfigError naming its dotted path.

    Later problems are summarised in the message so one run of the CLI shows most of
    them. Given the validated ``data``, problems come in the order the user wrote the
    keys rather than the order the model declares them; ``source`` ends the message.
    """
    details = error.errors(include_url=False)
    if data is not None:
        written: dict[str | int, int] = {key: index for index, key in enumerate(data)}
        details.sort(key=lambda d: written.get(d["loc"][0] if d["loc"] else "", -1))
    first = details[0]
    field = _dotted(first)
    message = _describe(first, field)
    others = [
        f"{_dotted(d) or '(top level)'}: {_describe(d, _dotted(d))}"
        for d in details[1 : _MAX_EXTRA_PROBLEMS + 1]
    ]
    if others:
        message += "; also " + "; ".join(others)
    if len(details) > _MAX_EXTRA_PROBLEMS + 1:
        message += f"; and {len(details) - _MAX_EXTRA_PROBLEMS - 1} more"
    if source:
        message += f" (in {source})"
    if first["type"] == NOT_SUPPORTED:
        return NotSupportedError(message, field=field or None)
    return ConfigError(message, field=field or None)


def _unknown_field_message(key: str, fields: Iterable[str]) -> str:
    accepted = sorted(fields)
    guess = difflib.get_close_matches(key, accepted, n=1)
    hint = f" (did you mean {guess[0]}?)" if guess else ""
    return f"unknown field{hint}; accepted fields: {', '.join(accepted)}"


def _dotted(detail: ErrorDetails) -> str:
    parts = [str(p) for p in detail["loc"]]
    below = (detail.get("ctx") or {}).get("field")
    if detail["type"] in (NOT_SUPPORTED, _FIELD_ERROR) and below:
        parts.append(str(below))
    return ".".join(parts)


def _describe(detail: ErrorDetails, field: str) -> str:
    context = detail.get("ctx") or {}
    if detail["type"] == NOT_SUPPORTED:
        value = context.get("value")
        return f"not supported by Berth yet: {field}" + (f": {value}" if value else "")
    if detail["type"] == _FIELD_ERROR:
        return str(context["message"])
    if detail["type"] == "value_error":
        # Our validators word the whole message, including the value they were given.
        return str(context.get("error", detail["msg"]))
    if detail["type"] == "missing":
        return "required field is missing"
    if _SECRET_KEYS.intersection(str(part) for part in detail["loc"]):
        return f"{detail['msg']}, got a {type(detail['input']).__name__}"  # never the value
    return f"{detail['msg']}, got {_show(detail['input'])}"


def _show(value: object) -> str:
    text = _REPR.repr(value)
    if len(text) > _MAX_SHOWN_INPUT:
        return text[: _MAX_SHOWN_INPUT - 3] + "..."
    return text


class _BerthLoader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1 base-60 numbers, refusing duplicate keys.

    YAML 1.1 reads ``8080:22`` as the integer 484822, which turns a quoted-nowhere
    port mapping into nonsense; dstack files write such mappings unquoted. A duplicate
    key silently keeps the last value in PyYAML, hiding half of a user's edit.
    """

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        # Refused here, cheaply: a deep document would otherwise take seconds to
        # end in a RecursionError (1 KB of "[" costs the server that much CPU).
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nested deeper than {MAX_YAML_DEPTH} levels",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            _refuse_bombs(node)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:  # `<<: *base` may legitimately repeat keys
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool):
                continue  # a mapping or list as a key: PyYAML's own "unhashable key" below
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _refuse_bombs(root: yaml.Node) -> None:
    """Refuse a document whose anchors and aliases expand past MAX_YAML_NODES, or loop.

    Aliases share nodes, so the size is counted once per distinct node with a
    memo: linear in the text, however large the expansion.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise yaml.composer.ComposerError(
                None, None, "an alias refers to a node that contains it", node.start_mark
            )
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        open_nodes.discard(key)
        if total > MAX_YAML_NODES:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"anchors and aliases expand to more than {MAX_YAML_NODES} nodes",
                node.start_mark,
            )
        sizes[key] = total
        return total

    size(root)


_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_BerthLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# YAML 1.1's int and float patterns minus their base-60 (``a:b``) alternatives.
_BerthLoader.add_implicit_resolver(
    _INT_TAG,
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_BerthLoader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?"
        r"|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)
