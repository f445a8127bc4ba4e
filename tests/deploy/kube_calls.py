"""What Berth's code asks of the Kubernetes API, read from the source, and what RBAC grants.

Every Kubernetes call goes through the typed clients on :class:`shared.kube.Kube`
(``k.core.create_namespaced_pod``, ``k.apps.…``), and the generated method names
follow one grammar: ``<action>_namespaced_<kind>`` inside a namespace,
``<action>_<kind>_for_all_namespaces`` across them, ``<action>_<kind>`` for
cluster-scoped kinds. So the verbs, resources and scopes Berth needs can be
derived from the code itself, and compared with the Role and ClusterRole in
``deploy/k8s``. A module that imports ``kubernetes.watch`` also watches what
it lists (that is how ``Watch.stream`` is used). Two calls are made around the
typed clients: :func:`shared.kube.pod_proxy.pod_request` needs ``pods/proxy``
with the verb of the HTTP method each call site names, and
:meth:`shared.kube.Kube.post` needs ``create`` on the collection each call site
names (``k.post("pods", ...)`` or ``partial(k.post, "pods")``), and
:func:`shared.kube.pod_exec.exec_output` needs ``pods/exec``: ``create`` (how the
apiserver authorizes a WebSocket exec since 1.31) and ``get`` (before it).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# The server-side code; cli/ talks to Berth's API, and cli/local is the local cluster's admin.
PACKAGES = ("shared", "api", "workers")
# Attribute names of the typed API groups on shared.kube.Kube, and their API group.
API_GROUPS = {"core": "", "apps": "apps", "rbac": "rbac.authorization.k8s.io"}
VERBS = {
    "create": "create",
    "read": "get",
    "list": "list",
    "delete": "delete",
    "delete_collection": "deletecollection",
    "patch": "patch",
    "replace": "update",
}
_ACTION = "|".join(sorted(VERBS, key=len, reverse=True))
_NAMESPACED = re.compile(rf"({_ACTION})_namespaced_(\w+?)(_log|_status|_exec)?$")
_ALL_NAMESPACES = re.compile(rf"({_ACTION})_(\w+)_for_all_namespaces$")
_CLUSTER = re.compile(rf"({_ACTION})_(\w+)$")
POD_REQUEST = "pod_request"
KUBE_POST = "post"
EXEC_OUTPUT = "exec_output"
SCRAPE_POD = "scrape_pod"  # a GET on a pod of any namespace: the ClusterRole's
_HTTP_VERBS = {"GET": "get", "POST": "create", "PUT": "update", "DELETE": "delete"}

NAMESPACE, CLUSTER = "namespace", "cluster"


@dataclass(frozen=True, order=True)
class Access:
    """One permission: ``verb`` on ``resource`` (``pods``, ``pods/log``) in ``scope``."""

    scope: str  # NAMESPACE (the runs namespace, the Role) or CLUSTER (the ClusterRole)
    group: str
    resource: str
    verb: str

    def __str__(self) -> str:
        group = f"{self.group}/" if self.group else ""
        return f"{self.verb} {group}{self.resource} ({self.scope})"


def accesses_in_code() -> dict[Access, list[str]]:
    """Every access Berth's server code needs, with the ``file:line`` places that need it."""
    found: dict[Access, list[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            watches = _imports_kubernetes_watch(tree)
            for node in ast.walk(tree):
                where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
                proxied = _pod_request_verb(node)
                if proxied is not None:
                    access = Access(NAMESPACE, "", "pods/proxy", proxied)
                    found.setdefault(access, []).append(where)
                posted = _posted_collection(node)
                if posted is not None:
                    access = Access(NAMESPACE, "", posted, "create")
                    found.setdefault(access, []).append(where)
                if _calls(node, EXEC_OUTPUT):
                    for verb in ("create", "get"):
                        access = Access(NAMESPACE, "", "pods/exec", verb)
                        found.setdefault(access, []).append(where)
                if _calls(node, SCRAPE_POD):
                    access = Access(CLUSTER, "", "pods/proxy", "get")
                    found.setdefault(access, []).append(where)
                method = _client_method(node)
                if method is None:
                    continue
                for access in accesses_of(*method, watches=watches):
                    found.setdefault(access, []).append(where)
    return found


def _calls(node: ast.AST, name: str) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)) == name


def _posted_collection(node: ast.AST) -> str | None:
    """The collection of a ``<kube>.post("pods", ...)`` or ``partial(<kube>.post, "pods")``."""
    if not isinstance(node, ast.Call):
        return None
    if isinstance(node.func, ast.Attribute) and node.func.attr == KUBE_POST:
        first = node.args[0] if node.args else None
    elif _calls(node, "partial") and len(node.args) > 1:
        target = node.args[0]
        if not (isinstance(target, ast.Attribute) and target.attr == KUBE_POST):
            return None
        first = node.args[1]
    else:
        return None
    # An HTTP client's post("/api/...") names a URL, not a collection.
    if isinstance(first, ast.Constant) and re.fullmatch(r"[a-z]+", str(first.value)):
        return str(first.value)
    return None


def _pod_request_verb(node: ast.AST) -> str | None:
    """The RBAC verb of a ``pod_request(k, ns, pod, port, "METHOD", ...)`` call."""
    if not isinstance(node, ast.Call) or not _calls(node, POD_REQUEST):
        return None
    method = node.args[4] if len(node.args) > 4 else None
    if not isinstance(method, ast.Constant) or method.value not in _HTTP_VERBS:
        raise ValueError(f"pod_request needs its HTTP method as a literal (line {node.lineno})")
    return _HTTP_VERBS[method.value]


def accesses_granted(role: dict[str, Any], cluster_role: dict[str, Any]) -> set[Access]:
    """Every (verb, resource) the Role grants in its namespace and the ClusterRole everywhere."""
    granted: set[Access] = set()
    for scope, obj in ((NAMESPACE, role), (CLUSTER, cluster_role)):
        for rule in obj.get("rules", []):
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    for verb in rule.get("verbs", []):
                        granted.add(Access(scope, group, resource, verb))
    return granted


def _client_method(node: ast.AST) -> tuple[str, str] | None:
    """``(group attribute, method)`` for ``<anything>.core.<method>`` and its siblings."""
    if not isinstance(node, ast.Attribute) or not isinstance(node.value, ast.Attribute):
        return None
    if node.value.attr not in API_GROUPS:
        return None
    return node.value.attr, node.attr


def accesses_of(group_attr: str, method: str, *, watches: bool) -> list[Access]:
    group = API_GROUPS[group_attr]
    if m := _NAMESPACED.match(method):
        action, kind, sub = m.groups()
        scope, resource = NAMESPACE, _plural(kind) + (sub.replace("_", "/") if sub else "")
    elif (m := _ALL_NAMESPACES.match(method)) or (m := _CLUSTER.match(method)):
        action, kind = m.groups()
        scope, resource = CLUSTER, _plural(kind)
    else:
        raise ValueError(f"cannot tell which permission Kube.{group_attr}.{method} needs")
    verbs = [VERBS[action]] + (["watch"] if watches and action == "list" else [])
    return [Access(scope, group, resource, verb) for verb in verbs]


def _plural(kind: str) -> str:
    # The Kubernetes resource name: the kind in lower case, without underscores, plus "s".
    return kind.replace("_", "") + "s"


def _imports_kubernetes_watch(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported = {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
        elif isinstance(node, ast.Import):
            imported = {alias.name for alias in node.names}
        else:
            continue
        if "kubernetes.watch" in imported:
            return True
    return False
