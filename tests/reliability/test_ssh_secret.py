"""A user's run pods in a project share one SSH Secret (``workers/ssh_secret.py``):
made once, pinned by the client, and deleted by beat's reaper only after two passes
found no pod naming it."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

from shared import kube, ssh
from shared.state.records import Run, RunStatus
from tests.polling import wait_until
from tests.reliability.world import World, submit_task
from workers import orphans as reaper
from workers import ssh_secret

pytestmark = pytest.mark.integration


def _running(world: World, run: Run) -> Callable[[], bool]:
    return lambda: world.ctx.store.get_run(run.id).status == RunStatus.RUNNING


def _ssh_secrets(world: World) -> dict[str, object]:
    k = world.kube
    selector = f"{kube.LABEL_MANAGED}={kube.MANAGED_BY},{ssh_secret.LABEL_SSH_KEYS}"
    items = k.call(k.core.list_namespaced_secret, world.namespace, label_selector=selector).items
    return {s.metadata.name: s for s in items if s.metadata.deletion_timestamp is None}


def test_a_users_runs_share_one_ssh_secret_the_reaper_keeps_while_a_pod_names_it(
    calm_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = calm_world
    k, ns, store = world.kube, world.namespace, world.ctx.store
    user_key = ssh.public_key_text(ssh.new_host_key()) + " me@laptop"
    with world.stack.client() as http:
        assert http.put("/api/users/me/ssh-key", json={"public_key": user_key}).status_code == 204
    runs = [submit_task(world, f"ssh-share-{i}") for i in range(2)]
    for run in runs:
        wait_until(_running(world, run), timeout=60, what=f"{run.name} running")
    jobs = [store.get_job(run.job_ids[0]) for run in runs]
    name = jobs[0].ssh_secret
    assert name is not None and name.startswith(ssh_secret.PREFIX)
    assert all(job.ssh_secret == name for job in jobs)
    for job in jobs:
        pod = k.call(k.core.read_namespaced_pod, job.pod_name, ns)
        (mounted,) = [v.secret.secret_name for v in pod.spec.volumes if v.name == "berth"]
        assert mounted == name
    secret = _ssh_secrets(world)[name]
    data = {key: base64.b64decode(v).decode() for key, v in secret.data.items()}  # type: ignore[attr-defined]
    assert user_key in data["authorized_keys"]
    # What `berth attach` pins is the public half of the key the pods' sshd serves.
    pinned = ssh.pod_host_key(k, ns, name)
    assert pinned == ssh.public_key_text(data[ssh.HOST_KEY_FILE])
    assert not any(f"secret/{name}" == r for r in reaper.reap_orphans(world.ctx))

    monkeypatch.setattr(ssh_secret, "UNUSED_FOR_S", 0.0)  # any pass may delete an unnamed one
    assert not any(f"secret/{name}" == r for r in reaper.reap_orphans(world.ctx))
    assert name in _ssh_secrets(world)  # named by the two pods still

    for run in runs:
        with world.stack.client() as http:
            assert http.post(f"/api/projects/main/runs/{run.name}/stop", json={}).status_code == 200
    selector = f"{kube.LABEL_RUN} in ({', '.join(run.name for run in runs)})"
    wait_until(
        lambda: not k.call(k.core.list_namespaced_pod, ns, label_selector=selector).items,
        timeout=60,
        what="the runs' pods gone",
    )

    monkeypatch.setattr(ssh_secret, "UNUSED_FOR_S", 3600.0)
    assert not any(f"secret/{name}" == r for r in reaper.reap_orphans(world.ctx))
    assert name in _ssh_secrets(world)  # one pass found it unnamed: not enough

    monkeypatch.setattr(ssh_secret, "UNUSED_FOR_S", 0.0)
    assert f"secret/{name}" in reaper.reap_orphans(world.ctx)
    assert name not in _ssh_secrets(world)
