"""``berth local up``'s server config: project ``team`` uses the namespace-only credential."""

from __future__ import annotations

from pathlib import Path

from cli.local.berth import server_config
from cli.local.team import ROLE_FILE, TEAM_NAMESPACE, TEAM_PROJECT


def test_project_team_runs_in_berth_team_with_its_own_kubeconfig() -> None:
    config = server_config(Path("/state/local/kubeconfig"), None)
    projects = {p["name"]: p["backends"][0] for p in config["projects"]}
    assert set(projects) == {"main", TEAM_PROJECT}
    team = projects[TEAM_PROJECT]
    assert team["namespace"] == TEAM_NAMESPACE != projects["main"]["namespace"]
    assert team["kubeconfig"] == {"filename": f"/state/local/{TEAM_NAMESPACE}.kubeconfig"}
    assert projects["main"]["kubeconfig"] == {"filename": "/state/local/kubeconfig"}


def test_the_team_role_is_the_shipped_namespace_only_role_and_nothing_cluster_wide() -> None:
    text = ROLE_FILE.read_text()
    assert "kind: Role\n" in text
    assert "ClusterRole" not in text
