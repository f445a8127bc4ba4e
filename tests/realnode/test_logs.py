"""A run's output outlives its pod: every line kept by the collector and served from the store.

The real nodes rotate container logs at 1 MiB (cli/local/realnode/configs.py), so the
log API itself serves only the tail of a chatty run; what ``berth logs`` shows beyond
that comes from Berth's own copy.
"""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from cli.local import cluster
from cli.local.realnode.configs import NodePaths
from shared import kube
from shared.errors import KubeNotFound
from tests.polling import wait_until
from tests.realnode.rotation import KubeletLostLines, RotatedFiles, kubelet_losses
from tests.realnode.world import (
    SMALL,
    START_S,
    apply,
    log_meta,
    logs,
    run,
    running,
    sigkill,
    wait_status,
)
from tests.stack import BERTH, Stack

pytestmark = [pytest.mark.integration, pytest.mark.realnode]

LINES = 200_000


def test_200000_lines_past_the_kubelets_log_rotation_are_all_kept_in_order_once(
    real_stack: Stack, real_cluster: cluster.ClusterState, real_kube: kube.Kube, tmp_path: Path
) -> None:
    # 10,000 lines a second for twenty seconds: ~10 MiB of CRI log, rotated at 1 MiB.
    # The kubelet's follow reopens the newest file after a rotation, so a reader more
    # than one rotation behind would skip a file: ~0.5 MiB/s keeps a busy 2-core host
    # (seen: 20,000 lines/s lost lines at a load average of 4) well inside that.
    name = "chatty"
    with RotatedFiles(
        _pod_log_roots(real_cluster),
        real_stack.namespace,
        lambda: _pod_name(real_stack, name),
        tmp_path / "rotated",
    ) as rotated:
        assert name == apply(
            real_stack,
            tmp_path,
            f"""
            type: task
            name: {name}
            commands:
              - export N=10000
              - for b in $(seq 0 19); do seq -f "line %06g" $((b*N)) $((b*N + N-1)); sleep 1; done
            {SMALL}
            """,
        )
        done = wait_status(real_stack, name, "done", "failed", timeout=3 * START_S)
    assert done["status"] == "done", done
    assert rotated.found is not None, "the container's log directory was never seen"
    kept = rotated.files()
    assert kept, "no rotated file kept: the kubelet did not rotate, or unseen"
    expected = [f"line {i:06d}" for i in range(LINES)]
    # ``logs -f`` of an ended run returns once the collector has finished its output.
    stored = logs(real_stack, name, "-f").splitlines()
    meta = log_meta(real_stack, real_kube, name)
    if stored != expected:
        note = stored[-1] if stored and stored[-1].startswith("[berth] ") else None
        lost = kubelet_losses(expected, stored[:-1] if note else stored, kept)
        raise AssertionError(
            f"{len(stored)} of {len(expected)} lines stored ({lost} never served, "
            f"{meta.recovered} put back; last line {note!r})\n"
            f"{_store_view(real_stack, expected[0].encode())}\n"
            f"--- log-collector\n{_collector_log(real_stack)}"
        )
    # The container counted its 200,000 lines, and held on at its end until the collector
    # had put back whatever the kubelet never served from its copy (workers/collector/
    # recovery.py): every line is here, in order, once, and no line says one is missing.
    assert (meta.printed, meta.missing, meta.lines) == (LINES, 0, LINES)
    if meta.recovered:  # in the warnings summary, so a run shows how many it met
        warnings.warn(
            f"{meta.recovered} of {LINES} lines never served by the kubelet (the ends of"
            f" rotated files it moved on from; {len(kept)} rotated): all put back from the"
            " container's copy",
            KubeletLostLines,
            stacklevel=1,
        )
    # The kubelet rotated: its own log API no longer has the start of the output.
    k = real_kube
    pod = run(real_stack, name)["jobs"][0]["pod_name"]
    served = k.call(k.core.read_namespaced_pod_log, pod, real_stack.namespace, container="main")
    assert len(served.splitlines()) < LINES  # often empty: rotated after the last line
    assert "line 000000" not in served


def test_output_is_served_after_the_pod_and_its_node_are_deleted(
    real_stack: Stack, real_kube: kube.Kube, tmp_path: Path
) -> None:
    name = apply(
        real_stack,
        tmp_path,
        f"""
        type: task
        name: short-lived
        commands:
          - for i in $(seq 1 50); do echo "result $i"; done
        {SMALL}
        """,
    )
    done = wait_status(real_stack, name, "done", "failed", timeout=2 * START_S)
    assert done["status"] == "done", done
    expected = [f"result {i}" for i in range(1, 51)]
    wait_until(lambda: _all_lines(real_stack, name, 50), timeout=60, what="output stored")
    k = real_kube
    job = run(real_stack, name)["jobs"][0]
    node = job["node"]
    k.call(k.core.delete_namespaced_pod, job["pod_name"], real_stack.namespace)
    wait_until(
        lambda: not _pod_exists(k, real_stack.namespace, job["pod_name"]),
        timeout=60,
        what="the pod gone",
    )
    assert logs(real_stack, name).splitlines() == expected
    # The node goes too, as an autoscaler removes an idle one. A kubelet registers its
    # Node only when it starts, so the test puts the object back afterwards (the other
    # tests of the session need the node) and the kubelet's next status update fills it.
    saved = k.api.sanitize_for_serialization(k.call(k.core.read_node, node))
    k.call(k.core.delete_node, node)
    try:
        wait_until(lambda: not _node_exists(k, node), timeout=60, what=f"{node} deleted")
        assert logs(real_stack, name).splitlines() == expected
        assert logs(real_stack, name, "--tail", "2").splitlines() == expected[-2:]
    finally:
        k.call(k.core.create_node, _recreated(saved))
        wait_until(lambda: _node_ready(k, node), timeout=120, what=f"{node} Ready again")


def test_no_line_is_lost_or_doubled_when_the_collector_is_killed_twice(
    real_stack: Stack, tmp_path: Path
) -> None:
    name = apply(
        real_stack,
        tmp_path,
        f"""
        type: task
        name: sequenced
        commands:
          - for i in $(seq 1 1500); do echo "seq $i"; sleep 0.02; done
        {SMALL}
        """,
    )
    running(real_stack, name)
    for _ in range(2):
        wait_until(
            lambda: _stored_lines(real_stack, name) > 0, timeout=START_S, what="output stored"
        )
        # Each kill hits the collector that leads (not a standby still waiting).
        wait_until(lambda: _collector_leads(real_stack), timeout=60, what="the collector leading")
        before = _stored_lines(real_stack, name)
        sigkill(real_stack, "log-collector")
        real_stack.restart("log-collector")
        # The new leader takes the lease once the dead one's lapses, then resumes.
        wait_until(
            lambda n=before: _stored_lines(real_stack, name) > n,  # type: ignore[misc]
            timeout=60,
            what="the restarted collector storing new lines",
        )
    done = wait_status(real_stack, name, "done", "failed", timeout=3 * START_S)
    assert done["status"] == "done", done
    expected = [f"seq {i}" for i in range(1, 1501)]
    _assert_all_stored(real_stack, name, expected)


def test_both_attempts_of_a_retried_task_are_readable(
    real_stack: Stack, tmp_path: Path, team_volume: str
) -> None:
    name = apply(
        real_stack,
        tmp_path,
        f"""
        type: task
        name: twice
        retry: {{on_events: [error], duration: 10m}}
        volumes: [{team_volume}:/data]
        commands:
          - if [ -f /data/twice-mark ]; then echo second attempt; exit 0; fi
          - touch /data/twice-mark; echo first attempt; exit 1
        {SMALL}
        """,
    )
    done = wait_status(real_stack, name, "done", "failed", timeout=3 * START_S)
    assert done["status"] == "done", done
    last = wait_until(
        lambda: _second_attempt_shown(real_stack, name), timeout=60, what="the second attempt"
    )
    assert last.stdout == "second attempt\n"
    assert "had 2 attempts" in last.stderr
    assert logs(real_stack, name, "--attempt", "1") == "first attempt\n"
    assert logs(real_stack, name, "--attempt", "2") == "second attempt\n"
    bad = _cli(real_stack, "logs", name, "--attempt", "3")
    assert bad.returncode != 0
    assert "has 2 attempts with output" in bad.stderr
    events = logs(real_stack, name, "--events")
    assert "requeued (attempt 2)" in events
    assert "kubernetes" in events and "Started" in events  # the pods' own events, interleaved


def test_two_followers_of_one_running_job_see_the_same_lines(
    real_stack: Stack, tmp_path: Path
) -> None:
    name = apply(
        real_stack,
        tmp_path,
        f"""
        type: task
        name: watched
        commands:
          - for i in $(seq 1 40); do echo "step $i"; sleep 0.1; done
        {SMALL}
        """,
    )
    running(real_stack, name)
    followers = [
        subprocess.Popen(
            [BERTH, "logs", "-f", name],
            env=real_stack.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [f.communicate(timeout=2 * START_S)[0] for f in followers]
    expected = "".join(f"step {i}\n" for i in range(1, 41))
    assert outputs == [expected, expected]


def _second_attempt_shown(stack: Stack, name: str) -> subprocess.CompletedProcess[str] | None:
    result = _cli(stack, "logs", name)
    return result if "second" in result.stdout else None


def _assert_all_stored(stack: Stack, name: str, expected: list[str]) -> None:
    """Every line, once and in order; a failure says how many and which are missing."""
    try:
        got = wait_until(
            lambda: _all_lines(stack, name, len(expected)), timeout=60, what="all lines"
        )
    except AssertionError:
        got = logs(stack, name).splitlines()
        stored = set(got)
        missing = [line for line in expected if line not in stored]
        raise AssertionError(
            f"{len(got)} of {len(expected)} lines stored; {len(missing)} missing:"
            f" {missing[:3]} .. {missing[-3:]}\n{_store_view(stack, expected[0].encode())}\n"
            f"--- log-collector\n{_collector_log(stack)}"
        ) from None
    assert got == expected


def _store_view(stack: Stack, first_line: bytes) -> str:
    """The log store's own record of the streams that begin with ``first_line``: meta and
    each entry's first and last line, so a failure shows whether lines were never
    stored or are stored and not served."""
    settings = stack.settings()
    client: redis.Redis[bytes] = redis.Redis.from_url(settings.redis.url, socket_timeout=5)
    out = []
    try:
        for key in client.scan_iter(f"{settings.redis.key_prefix}:logs:*", count=1000):
            if not key.rsplit(b":", 1)[-1].isdigit():  # streams end in the attempt number
                continue
            entries = client.xrange(key)
            if not entries or first_line not in entries[0][1][b"d"].split(b"\n")[0]:
                continue
            out.append(f"{key.decode()} meta {client.hgetall(key + b':meta')}")
            for entry_id, fields in entries:
                lines = fields[b"d"].splitlines()
                out.append(f"  {entry_id.decode()} n={len(lines)} {lines[0]!r} .. {lines[-1]!r}")
    finally:
        client.close()
    return "\n".join(out)


def _collector_log(stack: Stack) -> str:
    record = next(p for p in stack.processes if p.name == "log-collector")
    text = Path(record.log).read_text(errors="replace").splitlines()
    return "\n".join(line for line in text if "collector" in line or "sequenced" in line)[-8000:]


def _collector_leads(stack: Stack) -> bool:
    """Whether the stack's (current) log-collector process holds the collector lease."""
    record = next(p for p in stack.processes if p.name == "log-collector")
    settings = stack.settings()
    client: redis.Redis[bytes] = redis.Redis.from_url(settings.redis.url, socket_timeout=5)
    try:
        holder = client.get(f"{settings.redis.key_prefix}:lease:log-collector") or b""
    finally:
        client.close()
    return f":{record.pid}:".encode() in holder


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return stack.cli(*args, timeout=120)


def _pod_log_roots(state: cluster.ClusterState) -> list[Path]:
    """Each real node's ``podLogsDir``."""
    assert state.real_nodes is not None
    directory = Path(state.directory)
    return [NodePaths.of(directory, i).pod_logs for i in range(state.real_nodes.count)]


def _pod_name(stack: Stack, name: str) -> str | None:
    """The run's pod once it has one (asked from a thread: an API hiccup is a retry)."""
    try:
        with stack.client() as c:
            r = c.get(f"/api/projects/main/runs/{name}")
    except httpx.HTTPError:
        return None
    jobs = r.json()["jobs"] if r.status_code == 200 else []
    return str(jobs[0]["pod_name"]) if jobs and jobs[0].get("pod_name") else None


def _all_lines(stack: Stack, name: str, count: int) -> list[str] | None:
    lines = logs(stack, name).splitlines()
    return lines if len(lines) >= count else None


def _stored_lines(stack: Stack, name: str) -> int:
    return len(logs(stack, name).splitlines())


def _pod_exists(k: kube.Kube, namespace: str, pod: str) -> bool:
    try:
        k.call(k.core.read_namespaced_pod, pod, namespace)
    except KubeNotFound:
        return False
    return True


def _node_exists(k: kube.Kube, node: str) -> bool:
    try:
        k.call(k.core.read_node, node)
    except KubeNotFound:
        return False
    return True


def _recreated(saved: dict[str, Any]) -> dict[str, Any]:
    meta = saved["metadata"]
    spec = {
        key: saved["spec"][key] for key in ("podCIDR", "podCIDRs", "taints") if key in saved["spec"]
    }
    return {
        "metadata": {
            "name": meta["name"],
            "labels": meta.get("labels", {}),
            "annotations": meta.get("annotations", {}),
        },
        "spec": spec,
    }


def _node_ready(k: kube.Kube, node: str) -> bool:
    try:
        obj = k.call(k.core.read_node, node)
    except KubeNotFound:
        return False
    conditions = obj.status.conditions or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def test_binary_output_and_a_10_mib_line_without_a_newline_are_kept_and_served_safely(
    real_stack: Stack, tmp_path: Path
) -> None:
    name = apply(
        real_stack,
        tmp_path,
        f"""
        type: task
        name: garbage
        commands:
          - head -c 4096 /dev/urandom; echo
          - head -c 10485760 /dev/zero | tr '\\0' a; echo
          - echo after the long line
        {SMALL}
        """,
    )
    done = wait_status(real_stack, name, "done", "failed", timeout=2 * START_S)
    assert done["status"] == "done", done

    def served() -> bytes | None:
        result = subprocess.run(
            [BERTH, "logs", name], env=real_stack.env, capture_output=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        return result.stdout if result.stdout.endswith(b"after the long line\n") else None

    out = wait_until(served, timeout=60, what="the output after the long line")
    # The 10 MiB line is cut at logs.max_line_bytes (1 MiB) and says so; the rest is kept.
    assert b"[berth] line cut at 1048576 bytes\n" in out
    assert len(out) < 2 * 1024 * 1024
    assert out.count(b"a" * 1000) >= 1000
