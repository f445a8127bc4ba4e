"""A service's SGLang router told its workers: which replicas, of which kind, what changes. Pure.

The calls themselves (through the apiserver's pod proxy, to a router process in a
real pod) are tested on the real node (tests/realnode/test_service_router.py).
"""

from __future__ import annotations

from typing import Any

from shared.configuration.parse import parse_configuration
from shared.state.records import Job, RunStatus
from workers.service_routers import desired_workers, reconcile

PD = """
type: service
port: 8000
replicas:
  - count: 1
    commands: [smg launch --pd-disaggregation]
    resources: {cpu: 4}
    router: {type: sglang}
  - name: prefill
    count: 1..4
    scaling: {metric: rps, target: 3}
    commands:
      - |
        python -m sglang.launch_server --disaggregation-mode prefill \
          --disaggregation-bootstrap-port 8998
    resources: {gpu: H200}
  - name: decode
    count: 1..8
    scaling: {metric: rps, target: 2}
    commands: [python -m sglang.launch_server --disaggregation-mode decode]
    resources: {gpu: H200}
"""


def _job(n: int, group: str, ip: str | None, **extra: Any) -> Job:
    fields: dict[str, Any] = {"status": RunStatus.RUNNING, "pod_ip": ip, "pod_name": f"p{n}"}
    return Job(
        id=f"j{n}", run_id="r", project="main", run_name="pd", group=group, **(fields | extra)
    )


def test_the_other_groups_ready_replicas_are_the_workers_with_their_kind() -> None:
    conf = parse_configuration(PD)
    jobs = [
        _job(0, "0", "10.0.0.1"),  # the router itself
        _job(1, "prefill", "10.0.0.2"),
        _job(2, "decode", "10.0.0.3"),
        _job(3, "decode", "10.0.0.4", ready=False),  # its probe fails: no traffic
        _job(4, "decode", None),  # no address yet
        _job(5, "decode", "10.0.0.6", status=RunStatus.PROVISIONING),
    ]
    assert desired_workers(conf, jobs, router_group_name="0", port=8000) == [
        {"url": "http://10.0.0.2:8000", "worker_type": "prefill", "bootstrap_port": 8998},
        {"url": "http://10.0.0.3:8000", "worker_type": "decode"},
    ]


def test_reconcile_adds_the_missing_and_removes_the_gone_by_id() -> None:
    wanted = [
        {"url": "http://10.0.0.2:8000", "worker_type": "regular"},
        {"url": "http://10.0.0.3:8000", "worker_type": "regular"},
    ]
    listed = {
        "workers": [
            {"id": "w-1", "url": "http://10.0.0.2:8000/"},  # the same, with a slash
            {"id": "w-9", "url": "http://10.0.0.9:8000"},  # a replica that went away
        ]
    }
    add, remove = reconcile(listed, wanted)
    assert [w["url"] for w in add] == ["http://10.0.0.3:8000"] and remove == ["w-9"]
    assert reconcile({"workers": [{"id": "a", "url": w["url"]} for w in wanted]}, wanted) == (
        [],
        [],
    )  # twice: nothing more to do
    assert reconcile(None, wanted) == (wanted, [])  # an empty answer: every worker is new
