"""deploy/namespace-only: the Role a team applies in its one namespace, read as data."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.rbac import manifest

FILE = Path(__file__).resolve().parents[2] / "deploy" / "namespace-only" / "rbac.yaml"


def test_the_namespace_only_role_grants_exactly_the_namespaced_role_of_a_full_install() -> None:
    docs = [d for d in yaml.safe_load_all(FILE.read_text()) if d]
    [role] = [d for d in docs if d["kind"] == "Role"]
    assert role["rules"] == manifest("Role", "berth")["rules"]


def test_nothing_in_it_is_cluster_scoped_and_everything_is_in_one_namespace() -> None:
    docs = [d for d in yaml.safe_load_all(FILE.read_text()) if d]
    assert sorted(d["kind"] for d in docs) == ["Role", "RoleBinding", "ServiceAccount"]
    assert {d["metadata"]["namespace"] for d in docs} == {"my-team"}
    [binding] = [d for d in docs if d["kind"] == "RoleBinding"]
    assert binding["roleRef"]["kind"] == "Role"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "berth", "namespace": "my-team"}
    ]
