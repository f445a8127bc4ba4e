"""Tasks really run: their commands, exit codes, OOM kills, retries, logs and SIGTERM."""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path

import pytest

from shared import kube
from tests.polling import wait_until
from tests.realnode.world import (
    SMALL,
    START_S,
    apply,
    apply_and_follow,
    follow_logs,
    logs,
    run,
    running,
    wait_status,
)
from tests.stack import BERTH, Stack

pytestmark = [pytest.mark.integration, pytest.mark.realnode]


def test_a_task_runs_its_commands_on_a_real_node_and_finishes_done(
    real_stack: Stack, tmp_path: Path
) -> None:
    result = apply_and_follow(
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
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hello from berth-main-hello-0-0 rank=0 gpus=GPU-berth-real-" in result.stdout
    assert "45\n" in result.stdout
    # Shown once: the follow resumes past what it printed when a log stream ends early.
    assert result.stdout.count("hello from") == 1, result.stdout
    assert "hello: done" in result.stdout
    assert run(real_stack, "hello")["status"] == "done"


def test_a_task_applied_again_under_its_name_runs_again_after_the_first_run_ended(
    real_stack: Stack, tmp_path: Path
) -> None:
    # The first run's ended pod and secret are kept (its output, `kubectl describe`) and
    # hold the names the second run's objects take: they are the first run's leftovers.
    for round_ in (1, 2):
        result = apply_and_follow(
            real_stack,
            tmp_path,
            f"""
            type: task
            name: again
            env: [ROUND={round_}]
            commands:
              - echo "round $ROUND"
            {SMALL}
            """,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"round {round_}\n" in result.stdout
        assert "again: done" in result.stdout


def test_a_command_that_exits_3_fails_the_run_with_exit_code_3(
    real_stack: Stack, tmp_path: Path
) -> None:
    result = apply_and_follow(
        real_stack,
        tmp_path,
        f"""
        type: task
        name: exits-three
        commands: [echo about to fail, exit 3, echo never]
        {SMALL}
        """,
    )
    assert result.returncode == 3  # apply exits with the run's own exit code
    assert "about to fail" in result.stdout and "never" not in result.stdout
    failed = run(real_stack, "exits-three")
    assert failed["status"] == "failed"
    assert failed["jobs"][0]["exit_code"] == 3
    assert "exit code 3" in failed["reason"], failed


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
    real_stack: Stack, tmp_path: Path, team_volume: str, team_volume_dir: Path
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
    # Only the retry can succeed: the first attempt always exits 1 (the mark proves it ran).
    assert (team_volume_dir / "flaky-mark").exists()


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
          - for i in $(seq 1 10); do echo "tick $i at $(date +%s.%N)"; sleep 1; done
        {SMALL}
        """,
    )
    running(real_stack, name)
    follow = subprocess.Popen(
        [BERTH, "logs", "-f", name],
        env=real_stack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert follow.stdout is not None
        seen: list[tuple[float, str]] = []
        deadline = time.monotonic() + START_S
        while len(seen) < 10 and time.monotonic() < deadline:
            line = follow.stdout.readline()
            if not line:
                break
            if line.startswith("tick"):
                seen.append((time.time(), line))
        assert [s[1].split()[1] for s in seen] == [str(i) for i in range(1, 11)], seen
        # Lines arrived while the task still ran, each before the next was printed: not
        # all at once at the end. (The follower may connect a few seconds late on a busy
        # machine; what it missed comes at once from Berth's copy, then the rest live.)
        printed = [float(s[1].split()[3]) for s in seen]
        live = [i for i in range(9) if seen[i][0] < printed[i + 1]]
        assert len(live) >= 2, seen
        assert follow.wait(timeout=START_S) == 0
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait(10)
        if follow.stdout is not None:
            follow.stdout.close()


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
    seen: list[str] = []

    def ready() -> bool:
        seen[:] = [logs(real_stack, name)]
        return "ready" in seen[0]

    try:
        wait_until(ready, timeout=START_S, what="ready")
    except AssertionError as e:
        # Seen once in a full run and never alone: say what the pod printed and was.
        pods = real_kube.call(
            real_kube.core.list_namespaced_pod,
            real_stack.namespace,
            label_selector=f"{kube.LABEL_RUN}={name}",
        ).items
        raise AssertionError(f"{e}\nlogs: {seen!r}\npods: {[p.status for p in pods]}") from None
    # Followed live through the stop; afterwards Berth's copy has the same line.
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
    assert "caught SIGTERM" in logs(real_stack, name)  # the pod is gone; the output is not
    final = wait_status(real_stack, name, "terminated", "done", "failed")
    assert final["status"] == "terminated", final


def test_two_node_task_peers_find_each_other_by_dns_and_talk_over_tcp(
    real_stack: Stack, tmp_path: Path
) -> None:
    encoded = base64.b64encode(RENDEZVOUS.encode()).decode()
    name = apply(
        real_stack,
        tmp_path,
        f"""
        type: task
        name: pair
        nodes: 2
        commands:
          # Time for the followers below to attach before the first line: each must
          # see every line live, from the first on.
          - sleep 3
          - echo {encoded} | base64 -d > /tmp/rdv.py
          - python3 /tmp/rdv.py
        {SMALL}
        """,
    )
    live = running(real_stack, name)
    ips = {j["job_num"]: j["pod_ip"] for j in live["jobs"]}
    followers = [follow_logs(real_stack, name, "--job", str(rank)) for rank in (0, 1)]
    try:
        done = wait_status(real_stack, name, "done", "failed")
        (rank0, err0), (rank1, err1) = (f.communicate(timeout=60) for f in followers)
    finally:
        for f in followers:
            if f.poll() is None:
                f.kill()
                f.communicate(timeout=10)
    assert done["status"] == "done", (done, rank0, rank1)
    assert [f.returncode for f in followers] == [0, 0], (err0, err1, real_stack.logs())
    # What the followers saw live is what Berth kept.
    assert logs(real_stack, name, "--job", "0") == rank0
    assert logs(real_stack, name, "--job", "1") == rank1
    listed = f"['{ips[0]}', '{ips[1]}']"
    assert f"rank 0 master {ips[0]} ips {listed}" in rank0, rank0
    assert f"rank 1 master {ips[0]} ips {listed}" in rank1, rank1
    assert f"rank 0 got hello-from-rank-1 from {ips[1]}" in rank0, rank0
    assert {j["node"] for j in done["jobs"]} == {"berth-real-0", "berth-real-1"}


# Rank 1 connects to rank 0 at DSTACK_MASTER_NODE_IP, as torchrun's rendezvous would.
RENDEZVOUS = """\
import os, socket, time
rank = int(os.environ["DSTACK_NODE_RANK"])
master = os.environ["DSTACK_MASTER_NODE_IP"]
print("rank", rank, "master", master, "ips", os.environ["DSTACK_NODES_IPS"].split(), flush=True)
if rank == 0:
    server = socket.create_server(("0.0.0.0", 29500))
    conn, peer = server.accept()
    print("rank 0 got", conn.recv(100).decode(), "from", peer[0], flush=True)
else:
    for _ in range(300):
        try:
            conn = socket.create_connection((master, 29500), timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    conn.sendall(b"hello-from-rank-1")
    print("rank 1 sent", flush=True)
"""
