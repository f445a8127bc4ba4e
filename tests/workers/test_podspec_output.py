"""The run container's output keeping, as the pod carries it (workers/podspec.py)."""

from __future__ import annotations

from shared.settings import LogSettings
from tests.shared.pods import job_pod
from workers.podspec import output_keeping

_TASK = {"type": "task", "commands": ["seq 1 3"]}
_UID = {"name": "BERTH_POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}}


def test_the_container_keeps_up_to_the_stores_cap_and_holds_at_the_nodes_rotation_size() -> None:
    logs = LogSettings(max_mib_per_attempt=2, hold_s=12, node_log_max_bytes=1234)
    [main] = job_pod(_TASK, output=output_keeping(logs))["spec"]["containers"]
    assert _UID in main["env"]  # what PID 1 marks its end line with
    script = main["command"][-1]
    assert f"head -c {2 * 1024 * 1024} " in script
    assert "-ge 1234 ]" in script  # the log file's size from which a rotation can happen
    assert "-lt 120 ]" in script  # 12 s, in tenths
    assert "berth-output-end" in script


def test_without_a_hold_the_container_keeps_no_copy_and_has_no_uid() -> None:
    keeping = output_keeping(LogSettings(hold_s=0))
    assert keeping.copy_bytes == 0 and not keeping.holds
    [main] = job_pod(_TASK, output=keeping)["spec"]["containers"]
    assert _UID not in main["env"]
    script = main["command"][-1]
    assert "head -c" not in script and "berth-output-end" not in script
    assert "wc -lc" in script  # still counted
