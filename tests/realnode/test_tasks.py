"""Tasks really run: their commands, exit codes, OOM kills, retries, logs and SIGTERM."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from shared import kube
from tests.polling import wait_until
from tests.realnode.world import START_S, apply, logs, run, running, wait_status
from tests.stack import BERTH, Stack

pytestmark = [pytest.mark.integration, pytest.mark.realnode]

# One CPU: dstack counts whole CPUs, and each real node has the host's two.
SMALL = "resources: {gpu: 1, cpu: 1.., memory: 0.1GB..}"


def test_a_task_runs_its_commands_on_a_real_node_and_finishes_done(
    real_stack: Stack, tmp_path: Path
) -> None:
    name = apply(
        real_stack,
        tmp_path,
        f"""
        type: task
        name: hello
        commands:
          - echo "hello from $(hostname) rank=$DSTACK_NODE_RANK gpus=$NVIDIA_VISIBLE_DEVICES"
          - python3 -c 'print(sum(range(10)))'
        {SMALL}
        """,
    )
    done = wait_status(real_stack, name, "done", "failed")
    assert done["status"] == "done", done
    out = logs(real_stack, name)
    assert "hello from berth-main-hello-0-0 rank=0 gpus=GPU-berth-real-" in out
    assert "45\n" in out


def test_a_command_that_exits_3_fails_the_run_with_exit_code_3(
    real_stack: Stack, tmp_path: Path
) -> None:
    name = apply(
        real_stack,
        tmp_path,
        f"""
        type: task
        name: exits-three
        commands: [echo about to fail, exit 3, echo never]
        {SMALL}
        """,
    )
    failed = wait_status(real_stack, name, "failed", "done")
    assert failed["status"] == "failed"
    assert "exit code 3" in str(failed), failed
    out = logs(real_stack, name)
    assert "about to fail" in out and "never" not in out


def test_a_process_past_its_memory_limit_is_oom_killed_and_the_run_says_so(
    real_stack: Stack, tmp_path: Path
) -> None:
    name = apply(
        real_stack,
        tmp_path,
        """
        type: task
        name: greedy
        commands: ["python3 -c 'x = bytearray(512 * 1024 * 1024); print(len(x))'"]
        resources: {gpu: 1, cpu: 1.., memory: 0.0625GB}
        """,
    )
    failed = wait_status(real_stack, name, "failed", "done")
    assert failed["status"] == "failed"
    assert "out of memory (OOMKilled, exit code 137)" in str(failed), failed


def test_retry_on_error_runs_a_failed_task_again_until_it_succeeds(
    real_stack: Stack, tmp_path: Path, team_volume: str
) -> None:
    # The first attempt leaves a mark on the volume and fails; the retry sees it.
    name = apply(
        real_stack,
        tmp_path,
        f"""
        type: task
        name: flaky
        retry: {{on_events: [error], duration: 10m}}
        volumes: [{team_volume}:/data]
        commands:
          - if [ -f /data/flaky-mark ]; then echo second attempt; exit 0; fi
          - touch /data/flaky-mark; echo first attempt; exit 1
        {SMALL}
        """,
    )
    done = wait_status(real_stack, name, "done", "failed", timeout=3 * START_S)
    assert done["status"] == "done", done
    assert "second attempt" in logs(real_stack, name)


def test_logs_follow_streams_lines_as_the_task_prints_them(
    real_stack: Stack, tmp_path: Path
) -> None:
    name = apply(
        real_stack,
        tmp_path,
        f"""
        type: task
        name: ticker
        commands:
          - for i in 1 2 3 4 5; do echo "tick $i at $(date +%s.%N)"; sleep 1; done
        {SMALL}
        """,
    )
    running(real_stack, name)
    follow = subprocess.Popen(
        [BERTH, "logs", "-f", name],
        env=real_stack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follow.stdout is not None
        seen: list[tuple[float, str]] = []
        deadline = time.monotonic() + START_S
        while len(seen) < 5 and time.monotonic() < deadline:
            line = follow.stdout.readline()
            if not line:
                break
            if line.startswith("tick"):
                seen.append((time.time(), line))
        assert [s[1].split()[1] for s in seen] == ["1", "2", "3", "4", "5"], seen
        # Each line arrived while the task still ran: not all at once at the end.
        assert seen[-1][0] - seen[0][0] >= 2.0, seen
        assert follow.wait(timeout=START_S) == 0
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait(10)


def test_stop_sends_sigterm_that_the_script_traps_and_the_pod_is_gone(
    real_stack: Stack, real_kube: kube.Kube, tmp_path: Path
) -> None:
    name = apply(
        real_stack,
        tmp_path,
        f"""
        type: task
        name: trapper
        commands:
          - trap 'echo "caught SIGTERM"; exit 0' TERM
          - echo ready
          - while true; do sleep 0.2; done
        {SMALL}
        """,
    )
    running(real_stack, name)
    wait_until(lambda: "ready" in logs(real_stack, name), timeout=START_S, what="ready")
    # Berth keeps no output of a deleted pod yet: follow it live to see the trap's line.
    follow = subprocess.Popen(
        [BERTH, "logs", "-f", name], env=real_stack.env, stdout=subprocess.PIPE, text=True
    )
    try:
        stopped_at = time.monotonic()
        result = real_stack.cli("stop", name)
        assert result.returncode == 0, result.stderr
        selector = f"{kube.LABEL_RUN}={name}"

        def gone() -> bool:
            pods = real_kube.call(
                real_kube.core.list_namespaced_pod, real_stack.namespace, label_selector=selector
            ).items
            return not pods

        wait_until(gone, timeout=60, what=f"{name}'s pod deleted")
        # Well inside the 30 s grace period: the trap ended the script, not a SIGKILL.
        assert time.monotonic() - stopped_at < 25
        streamed, _ = follow.communicate(timeout=60)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait(10)
    assert "caught SIGTERM" in streamed, streamed
    final = wait_status(real_stack, name, "terminated", "done", "failed")
    assert final["status"] == "terminated", final


def test_two_node_task_peers_find_each_other_by_dns_and_talk_over_tcp(
    real_stack: Stack, tmp_path: Path
) -> None:
    rendezvous = (
        "import os, socket, time\n"
        "rank = int(os.environ['DSTACK_NODE_RANK'])\n"
        "master = os.environ['DSTACK_MASTER_NODE_IP']\n"
        "print('rank', rank, 'master', master, 'ips', os.environ['DSTACK_NODES_IPS'].split(),"
        " flush=True)\n"
        "if rank == 0:\n"
        "    s = socket.create_server(('0.0.0.0', 29500)); c, a = s.accept()\n"
        "    print('rank 0 got', c.recv(100).decode(), 'from', a[0], flush=True)\n"
        "else:\n"
        "    for _ in range(300):\n"
        "        try: c = socket.create_connection((master, 29500), timeout=1); break\n"
        "        except OSError: time.sleep(0.2)\n"
        "    c.sendall(b'hello-from-rank-1'); print('rank 1 sent', flush=True)\n"
    )
    (tmp_path / "rdv.py").write_text(rendezvous)
    name = apply(
        real_stack,
        tmp_path,
        f"""
        type: task
        name: pair
        nodes: 2
        commands:
          - |
            cat > /tmp/rdv.py <<'EOF'
        {_indent(rendezvous, 12)}
            EOF
          - python3 /tmp/rdv.py
        {SMALL}
        """,
    )
    live = running(real_stack, name)
    ips = {j["job_num"]: j["pod_ip"] for j in live["jobs"]}
    done = wait_status(real_stack, name, "done", "failed")
    assert done["status"] == "done", done
    rank0 = logs(real_stack, name, "--job", "0")
    rank1 = logs(real_stack, name, "--job", "1")
    expected_ips = f"'ips', ['{ips[0]}', '{ips[1]}']".replace("'ips', ", "ips ")
    assert f"rank 0 master {ips[0]} ips ['{ips[0]}', '{ips[1]}']" in rank0, (rank0, expected_ips)
    assert f"rank 1 master {ips[0]} ips ['{ips[0]}', '{ips[1]}']" in rank1, rank1
    assert f"rank 0 got hello-from-rank-1 from {ips[1]}" in rank0
    nodes = {j["node"] for j in run(real_stack, name)["jobs"]}
    assert nodes == {"berth-real-0", "berth-real-1"}


def _indent(text: str, n: int) -> str:
    return "\n".join((" " * n + line) if line else line for line in text.splitlines())
