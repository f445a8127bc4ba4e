"""dstack's entrypoint, nvcc, schedule, utilization_policy, startup_order and stop_criteria:
how they parse, what they refuse, and what the pod and the submission make of them."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from shared.configuration.parse import parse_configuration
from shared.errors import ConfigError
from shared.placement.node_order import MASTER_DONE_REASON, follows, stops_the_others, waiting_for
from shared.server_features import check_server_features
from shared.settings import ApiSettings, GpuMetricsSettings, Settings
from shared.state.records import Job, RunStatus
from tests.shared.pods import job_pod
from workers.gpu_utilization import parse_utilization

S = RunStatus


def _error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_configuration(text)
    return caught.value


def _conf(text: str) -> Any:
    """The parsed configuration, typed loosely: each test knows which type it wrote."""
    return parse_configuration(text)


def _pod(data: dict[str, Any], **ctx: Any) -> dict[str, Any]:
    return job_pod(data, name="pol", **ctx)


def _script(pod: dict[str, Any]) -> str:
    command = pod["spec"]["containers"][0]["command"]
    assert command[1] == "-c"
    return str(command[2])


# -- entrypoint --------------------------------------------------------------------


def test_an_entrypoint_runs_with_each_command_as_one_more_argument() -> None:
    script = _script(
        _pod({"type": "task", "entrypoint": "bash -c", "commands": ["echo a; echo $0", "zero"]})
    )
    # dstack's Docker-like form: shlex.split(entrypoint) + commands, one argv.
    assert shlex.join(["bash", "-c", "echo a; echo $0", "zero"]) in script.splitlines()


def test_an_entrypoint_alone_is_enough_for_a_task_and_a_service() -> None:
    task = _conf("type: task\nentrypoint: python3 -m http.server\n")
    assert task.type == "task" and task.entrypoint == "python3 -m http.server"
    service = _conf("type: service\nport: 80\nentrypoint: nginx -g 'daemon off;'\n")
    assert service.type == "service"
    script = _script(_pod({"type": "service", "port": 80, "entrypoint": "nginx -g 'daemon off;'"}))
    assert "nginx -g 'daemon off;'" in script.splitlines()


def test_a_dev_environment_refuses_an_entrypoint_by_name() -> None:
    error = _error("type: dev-environment\nide: vscode\nentrypoint: bash\n")
    assert error.field == "entrypoint"
    assert "not supported by Berth yet: entrypoint" in error.message


def test_without_an_entrypoint_the_commands_stay_a_shell_script() -> None:
    script = _script(_pod({"type": "task", "commands": ["echo one", "echo two"]}))
    lines = script.splitlines()
    assert "echo one" in lines and "echo two" in lines


# -- nvcc --------------------------------------------------------------------------


def test_nvcc_runs_in_the_servers_devel_image() -> None:
    pod = _pod({"type": "task", "nvcc": True, "commands": ["nvcc --version"]}, devel_image="d:1")
    assert pod["spec"]["containers"][0]["image"] == "d:1"
    plain = _pod({"type": "task", "commands": ["nvcc --version"]}, devel_image="d:1")
    assert plain["spec"]["containers"][0]["image"] == "berth.local/run:x"


def test_nvcc_and_image_are_mutually_exclusive() -> None:
    error = _error("type: task\nimage: x\nnvcc: true\ncommands: [a]\n")
    assert error.field == "nvcc"
    assert "mutually exclusive" in error.message


def test_a_server_without_a_devel_image_refuses_nvcc_naming_the_field_and_setting() -> None:
    conf = _conf("type: task\nnvcc: true\ncommands: [nvcc --version]\n")
    with pytest.raises(ConfigError) as caught:
        check_server_features(conf, Settings(devel_image=None))
    assert caught.value.field == "nvcc"
    assert "devel_image" in caught.value.message
    check_server_features(conf, Settings(devel_image="registry.local/devel:1"))


# -- dstack: true (the berth CLI inside the run) -----------------------------------


def test_dstack_true_gives_the_pod_this_servers_address_and_the_runs_project() -> None:
    data = {"type": "task", "dstack": True, "commands": ["berth ps"]}
    env = {
        e["name"]: e.get("value")
        for e in _pod(data, server_url="http://berth-api.berth.svc:3000")["spec"]["containers"][0][
            "env"
        ]
    }
    assert env["BERTH_URL"] == "http://berth-api.berth.svc:3000"
    assert env["BERTH_PROJECT"] == "main"
    plain = _pod({"type": "task", "commands": ["x"]}, server_url="http://b:3000")
    assert "BERTH_URL" not in {e["name"] for e in plain["spec"]["containers"][0]["env"]}


def test_a_server_that_does_not_know_its_address_for_runs_refuses_dstack_true() -> None:
    conf = _conf("type: task\ndstack: true\ncommands: [berth ps]\n")
    with pytest.raises(ConfigError) as caught:
        check_server_features(conf, Settings())
    assert caught.value.field == "dstack"
    assert "BERTH_API__URL_FOR_RUNS" in caught.value.message
    check_server_features(conf, Settings(api=ApiSettings(url_for_runs="http://berth-api:3000")))


# -- utilization_policy ------------------------------------------------------------


def test_a_utilization_policy_parses_to_percent_and_seconds() -> None:
    conf = _conf(
        "type: task\ncommands: [a]\n"
        "utilization_policy:\n  min_gpu_utilization: 10\n  time_window: 1h\n"
    )
    policy = conf.utilization_policy
    assert policy is not None
    assert (policy.min_gpu_utilization, policy.time_window) == (10, 3600)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("min_gpu_utilization: 101\n  time_window: 1h", "utilization_policy.min_gpu_utilization"),
        ("min_gpu_utilization: 10\n  time_window: 1m", "utilization_policy.time_window"),
        ("min_gpu_utilization: 10", "utilization_policy.time_window"),
    ],
)
def test_a_bad_utilization_policy_names_its_field(body: str, field: str) -> None:
    assert _error(f"type: task\ncommands: [a]\nutilization_policy:\n  {body}\n").field == field


def test_a_server_without_gpu_metrics_refuses_a_utilization_policy() -> None:
    conf = _conf(
        "type: task\ncommands: [a]\n"
        "utilization_policy:\n  min_gpu_utilization: 10\n  time_window: 1h\n"
    )
    with pytest.raises(ConfigError) as caught:
        check_server_features(conf, Settings())
    assert caught.value.field == "utilization_policy"
    assert "BERTH_GPU_METRICS__EXPORTER_NAMESPACE" in caught.value.message
    metrics = GpuMetricsSettings(exporter_namespace="gpu-operator")
    check_server_features(conf, Settings(gpu_metrics=metrics))  # where the exporter runs


def test_the_exporters_utilisation_is_read_per_pod_and_gpu() -> None:
    text = (
        "# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).\n"
        "# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n"
        'DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a",namespace="runs",pod="p1"} 3\n'
        'DCGM_FI_DEV_GPU_UTIL{gpu="1",UUID="GPU-b",namespace="runs",pod="p1"} 97\n'
        'DCGM_FI_DEV_GPU_UTIL{gpu="2",UUID="GPU-c"} 0\n'  # no pod: an unused GPU
        'DCGM_FI_DEV_FB_USED{gpu="0",namespace="runs",pod="p1"} 1024\n'
        'DCGM_FI_DEV_GPU_UTIL{gpu="3",exported_namespace="runs",exported_pod="p2"} 50\n'
    )
    assert list(parse_utilization(text)) == [
        (("runs", "p1"), 3.0),
        (("runs", "p1"), 97.0),
        (("runs", "p2"), 50.0),
    ]


# -- schedule ----------------------------------------------------------------------


def test_a_schedule_takes_one_cron_or_several() -> None:
    one = _conf("type: task\ncommands: [a]\nschedule:\n  cron: '0 8 * * mon-fri'\n")
    assert one.schedule is not None and one.schedule.cron == ["0 8 * * mon-fri"]
    many = _conf("type: task\ncommands: [a]\nschedule:\n  cron: ['*/15 * * * *', '0 0 1 * *']\n")
    assert many.schedule is not None and many.schedule.cron == ["*/15 * * * *", "0 0 1 * *"]


@pytest.mark.parametrize("cron", ["not a cron", "61 * * * *", "* * * * * *", "0 8 * *"])
def test_a_cron_that_does_not_parse_is_refused_naming_it(cron: str) -> None:
    error = _error(f"type: task\ncommands: [a]\nschedule:\n  cron: '{cron}'\n")
    assert error.field == "schedule.cron"
    assert repr(cron) in error.message


# -- startup_order and stop_criteria -----------------------------------------------


def test_startup_order_and_stop_criteria_default_to_dstacks() -> None:
    conf = _conf("type: task\nnodes: 2\ncommands: [a]\n")
    assert (conf.startup_order, conf.stop_criteria) == ("any", "all-done")
    error = _error("type: task\nnodes: 2\ncommands: [a]\nstartup_order: master-last\n")
    assert error.field == "startup_order"


def _job(num: int, status: RunStatus = S.PROVISIONING) -> Job:
    return Job(
        id=f"j{num}", run_id="r", project="p", run_name="r", job_num=num, jobs_in_run=3,
        status=status,
    )  # fmt: skip


def test_workers_first_holds_the_master_until_every_worker_runs() -> None:
    master = _job(0)
    assert waiting_for("workers-first", master, [master, _job(1, S.RUNNING), _job(2)])
    everyone_runs = [master, _job(1, S.RUNNING), _job(2, S.RUNNING)]
    assert waiting_for("workers-first", master, everyone_runs) is None
    assert waiting_for("workers-first", _job(1), [master, _job(1), _job(2)]) is None


def test_master_first_holds_each_worker_until_the_master_runs() -> None:
    worker = _job(2)
    assert waiting_for("master-first", worker, [_job(0), _job(1), worker]) is not None
    assert waiting_for("master-first", worker, [_job(0, S.RUNNING), _job(1), worker]) is None
    assert waiting_for("master-first", _job(0), [_job(0), _job(1)]) is None


def test_any_order_holds_no_one() -> None:
    assert all(waiting_for("any", _job(n), [_job(0), _job(1), _job(2)]) is None for n in range(3))


def test_who_wakes_whom_and_who_ends_the_task() -> None:
    assert follows("master-first", _job(0)) and not follows("master-first", _job(1))
    assert follows("workers-first", _job(1)) and not follows("workers-first", _job(0))
    assert not follows("any", _job(0))
    assert stops_the_others("master-done", _job(0))
    assert not stops_the_others("master-done", _job(1))
    assert not stops_the_others("all-done", _job(0))
    assert "master" in MASTER_DONE_REASON
