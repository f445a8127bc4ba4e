"""A service's probes, strip_prefix and rate_limits: how they parse, what the pod and
the proxy's pure rules make of them."""

from __future__ import annotations

from typing import Any

import pytest

from shared.configuration import configuration_from_mapping
from shared.configuration.fields import HeaderKey, RateLimit
from shared.configuration.parse import parse_configuration
from shared.errors import ConfigError
from shared.services.service_traffic import matching_limit, partition_of
from shared.state.records import Job, Placement, Run, RunStatus
from workers.pod_status import judge_pod
from workers.podspec import PodContext, build_job_objects

SERVICE = "type: service\nport: 8000\ncommands: [serve]\n"


def _error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_configuration(text)
    return caught.value


def _container(data: dict[str, Any]) -> dict[str, Any]:
    conf = configuration_from_mapping({"name": "svc", **data})
    run = Run(
        id="r1",
        project="main",
        name="svc",
        user="admin",
        configuration=conf.model_dump(mode="json"),
        configuration_type=conf.type,
    )
    job = Job(id="j0", run_id="r1", project="main", run_name="svc", placement=Placement(node="n"))
    pod = build_job_objects(run, job, conf, PodContext(default_image="berth.local/run:x")).pod
    container: dict[str, Any] = pod["spec"]["containers"][0]
    return container


# -- probes ------------------------------------------------------------------------


def test_a_probe_becomes_the_replicas_readiness_probe_on_the_service_port() -> None:
    container = _container(
        {
            "type": "service",
            "port": 8000,
            "commands": ["serve"],
            "probes": [
                {
                    "type": "http",
                    "url": "/health?deep=1",
                    "headers": [{"name": "X-Probe", "value": "berth"}],
                    "timeout": "3s",
                    "interval": "15s",
                    "ready_after": 2,
                }
            ],
        }
    )
    assert container["readinessProbe"] == {
        "httpGet": {
            "path": "/health?deep=1",
            "port": 8000,
            "scheme": "HTTP",
            "httpHeaders": [{"name": "X-Probe", "value": "berth"}],
        },
        "timeoutSeconds": 3,
        "periodSeconds": 15,
        "successThreshold": 2,
        "failureThreshold": 1,
    }


def test_a_service_without_probes_has_no_readiness_probe() -> None:
    assert "readinessProbe" not in _container({"type": "service", "port": 80, "commands": ["s"]})
    empty = {"type": "service", "port": 80, "commands": ["s"], "probes": []}
    assert "readinessProbe" not in _container(empty)


def test_two_probes_are_refused_naming_probes_and_why() -> None:
    error = _error(SERVICE + "probes:\n  - {type: http, url: /a}\n  - {type: http, url: /b}\n")
    assert error.field == "probes"
    assert "one readiness probe per container" in error.message


def test_a_probe_with_a_body_is_refused_by_name() -> None:
    error = _error(SERVICE + "probes:\n  - {type: http, url: /a, body: x}\n")
    assert "not supported by Berth yet: probes.0.body" in error.message


def _pod(*, probed: bool, ready: str | None) -> dict[str, Any]:
    """A running pod as the apiserver's JSON has it."""
    conditions = [] if ready is None else [{"type": "Ready", "status": ready}]
    main: dict[str, Any] = {"name": "main"}
    if probed:
        main["readinessProbe"] = {"httpGet": {}}
    return {
        "spec": {"containers": [main]},
        "status": {"phase": "Running", "podIP": "10.0.0.5", "conditions": conditions},
    }


@pytest.mark.parametrize(
    ("probed", "condition", "ready"),
    [(True, "True", True), (True, "False", False), (True, None, False), (False, "False", None)],
)
def test_a_running_replica_is_ready_only_while_its_probe_passes(
    probed: bool, condition: str | None, ready: bool | None
) -> None:
    job = Job(id="j", run_id="r", project="p", run_name="n", pod_name="pod")
    verdict = judge_pod(_pod(probed=probed, ready=condition), job=job, stop_requested=False, now=0)
    assert verdict is not None
    assert verdict.status == RunStatus.RUNNING
    assert verdict.ready is ready


# -- strip_prefix and rate_limits --------------------------------------------------


def test_strip_prefix_defaults_to_true_as_in_dstack() -> None:
    conf = parse_configuration(SERVICE)
    assert conf.type == "service" and conf.strip_prefix is True
    whole = parse_configuration(SERVICE + "strip_prefix: false\n")
    assert whole.type == "service" and whole.strip_prefix is False


def test_rate_limits_take_dstacks_defaults() -> None:
    conf = parse_configuration(SERVICE + "rate_limits:\n  - rps: 4\n")
    assert conf.type == "service"
    assert conf.rate_limits == [RateLimit(rps=4)]
    (limit,) = conf.rate_limits
    assert (limit.prefix, limit.key.type, limit.burst) == ("/", "ip_address", 0)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("rate_limits:\n  - {rps: 1}\n  - {rps: 2, prefix: /}\n", "rate_limits"),
        ("rate_limits:\n  - {rps: 0}\n", "rate_limits.0.rps"),
        ("rate_limits:\n  - {rps: 1, prefix: api}\n", "rate_limits.0.prefix"),
        ("rate_limits:\n  - {rps: 1, burst: -1}\n", "rate_limits.0.burst"),
        ("rate_limits:\n  - {rps: 1, key: {type: header, header: 'a b'}}\n", "rate_limits.0.key"),
    ],
)
def test_a_bad_rate_limit_is_refused_naming_its_field(body: str, field: str) -> None:
    assert (_error(SERVICE + body).field or "").startswith(field)


def test_the_longest_matching_prefix_decides_the_limit() -> None:
    limits = [
        RateLimit(rps=4),
        RateLimit(prefix="/api/auth/", rps=1),
        RateLimit(prefix="/api", rps=2),
    ]
    assert matching_limit(limits, "/api/auth/login") is limits[1]
    assert matching_limit(limits, "/api/models") is limits[2]
    assert matching_limit(limits, "/index.html") is limits[0]
    assert matching_limit(limits[1:], "/index.html") is None


def test_a_partition_is_the_client_ip_or_the_headers_value() -> None:
    by_ip = RateLimit(rps=1)
    by_header = RateLimit(rps=1, key=HeaderKey(type="header", header="Authorization"))
    headers = {"authorization": "Bearer a"}
    assert partition_of(by_ip, client_ip="10.1.1.1", headers=headers) == "ip:10.1.1.1"
    assert partition_of(by_header, client_ip="10.1.1.1", headers=headers) == "header:Bearer a"
    assert partition_of(by_header, client_ip="10.1.1.1", headers={}) == "header:"
