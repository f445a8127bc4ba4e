"""What Berth writes for SSH, as pure functions: jump host objects, pod Secrets, SSH configs."""

from __future__ import annotations

import base64
from pathlib import Path

import asyncssh

from cli.attach import Jump, Node, SshAccess, ensure_include, render_config, render_known_hosts
from shared import ssh
from shared.configuration.parse import parse_run_configuration
from shared.configuration.server import server_config_from_text
from shared.state.records import Job, Placement, Run
from workers import ssh_secret
from workers.jumphost_objects import (
    ANNOTATION_CONFIG,
    JumpHostTarget,
    JumpObjects,
    authorized_keys,
    jump_host_targets,
    jump_objects,
)
from workers.podspec import PodContext, build_job_objects


def _project(name: str, port: int | None) -> str:
    jump = f", proxy_jump: {{hostname: h, port: {port}}}" if port else ""
    return (
        f"- name: {name}\n  backends: [{{type: kubernetes, kubeconfig: {{filename: /k}}{jump}}}]\n"
    )


SERVER = "projects:\n" + "".join(
    _project(n, p)
    for n, p in (("alpha", 30022), ("beta", 30022), ("gamma", 30023), ("delta", None))
)
TARGET = JumpHostTarget(
    id="c/ns/berth-jump-30022",
    name="berth-jump-30022",
    namespace="ns",
    cluster_key="c",
    projects=("a",),
    hostname="h",
    port=30022,
)


def _key() -> str:
    return ssh.new_host_key()


def _public(private: str) -> str:
    return ssh.public_key_text(private)


def test_projects_naming_one_cluster_namespace_and_port_share_a_jump_host() -> None:
    targets = {t.name: t for t in jump_host_targets(server_config_from_text(SERVER))}
    assert set(targets) == {"berth-jump-30022", "berth-jump-30023"}  # delta has no proxy_jump
    assert targets["berth-jump-30022"].projects == ("alpha", "beta")
    assert targets["berth-jump-30023"].projects == ("gamma",)


def test_every_authorized_key_may_forward_ports_and_nothing_else() -> None:
    berth = _public(_key())
    text = authorized_keys({"zoe": _public(_key()), "al": _public(_key())}, berth)
    lines = text.splitlines()
    assert [line.split()[-1] for line in lines] == ["al@berth", "zoe@berth", "berth-server@berth"]
    assert all(line.startswith("restrict,port-forwarding ssh-ed25519 ") for line in lines)


def test_new_keys_change_only_the_secret_while_a_new_host_key_rolls_the_jump_pod() -> None:
    host = _key()
    before = jump_objects(TARGET, image="img", keys="k1\n", host_key=host)
    after_keys = jump_objects(TARGET, image="img", keys="k2\n", host_key=host)
    after_host = jump_objects(TARGET, image="img", keys="k2\n", host_key=_key())
    assert before.deployment == after_keys.deployment
    assert before.secret["data"]["authorized_keys"] != after_keys.secret["data"]["authorized_keys"]

    def annotation(objects: JumpObjects) -> str:
        template = objects.deployment["spec"]["template"]
        return str(template["metadata"]["annotations"][ANNOTATION_CONFIG])

    assert annotation(after_host) != annotation(after_keys)
    assert before.service["spec"]["ports"][0]["nodePort"] == 30022
    volume = before.deployment["spec"]["template"]["spec"]["volumes"][0]["secret"]
    assert volume == {"secretName": "berth-jump-30022", "defaultMode": 0o400}


def test_a_run_pod_mounts_its_projects_ssh_secret_whose_host_key_halves_match() -> None:
    conf = parse_run_configuration("type: dev-environment\nide: vscode\n")
    run = Run(
        id="r", project="p", name="ide", user="u", configuration={}, configuration_type=conf.type
    )
    job = Job(id="j", run_id="r", project="p", run_name="ide", placement=Placement(node="n"))
    objects = build_job_objects(
        run, job, conf, PodContext(default_image="img", ssh_public_keys=("k",))
    )
    assert objects.secret is None  # nothing of the job's own: no env secrets, no registry
    assert objects.ssh_secret == ssh_secret.name_for("p", ("k",))
    body = ssh_secret.secret("p", ("k",))
    assert body["metadata"]["name"] == objects.ssh_secret  # type: ignore[index]
    assert body["immutable"] is True
    data = {k: base64.b64decode(v).decode() for k, v in body["data"].items()}  # type: ignore[attr-defined]
    assert data["authorized_keys"] == "k\n"
    assert data[ssh.HOST_KEY_PUB_FILE].strip() == _public(data[ssh.HOST_KEY_FILE])
    volume = objects.pod["spec"]["volumes"][-1]["secret"]
    assert volume["secretName"] == objects.ssh_secret
    assert {i["key"] for i in volume["items"]} == {"authorized_keys", ssh.HOST_KEY_FILE}
    labels = objects.pod["metadata"]["labels"]
    assert labels[ssh_secret.LABEL_SSH_KEYS] == ssh_secret.digest("p", ("k",))
    script = objects.pod["spec"]["containers"][0]["command"][-1]
    assert "-h /run/berth/ssh_host_ed25519_key -p 10022" in script


def test_the_ssh_secret_is_one_per_project_and_key_set() -> None:
    name = ssh_secret.name_for
    assert name("p", ("a", "b")) == name("p", ("a", "b"))
    assert (
        len({name("p", ("a", "b")), name("q", ("a", "b")), name("p", ("a",)), name("p", ())}) == 4
    )
    assert name("p", ("a", "b")) != name("p", ("b", "a"))  # order is the file's line order


def test_a_task_without_keys_gets_no_sshd_and_no_ssh_secret() -> None:
    conf = parse_run_configuration('type: task\ncommands: ["true"]\n')
    run = Run(id="r", project="p", name="t", user="u", configuration={}, configuration_type="task")
    job = Job(id="j", run_id="r", project="p", run_name="t", placement=Placement(node="n"))
    objects = build_job_objects(run, job, conf, PodContext(default_image="img"))
    assert objects.ssh_secret is None and objects.secret is None
    assert ssh_secret.LABEL_SSH_KEYS not in objects.pod["metadata"]["labels"]
    assert all("secret" not in v for v in objects.pod["spec"]["volumes"])


def _access(*, node_key: str | None) -> SshAccess:
    return SshAccess(
        project="main",
        run="pair",
        jump=Jump(hostname="10.0.0.1", port=30022, user="root", host_key=_public(_key())),
        nodes=[
            Node(
                names=["pair", "pair-0"],
                pod_ip="10.1.0.1",
                port=10022,
                user="root",
                host_key=node_key,
            ),
            Node(
                names=["pair-1"],
                pod_ip="10.1.0.2",
                port=10022,
                user="root",
                host_key=_public(_key()),
                job_num=1,
            ),
        ],
    )


def test_the_attach_config_pins_every_host_key_and_never_turns_checking_off(tmp_path: Path) -> None:
    access = _access(node_key=_public(_key()))
    known_hosts = tmp_path / "pair.known_hosts"
    config = render_config(access, identity=tmp_path / "id", known_hosts=known_hosts)
    assert "StrictHostKeyChecking no" not in config
    assert config.count("StrictHostKeyChecking yes") == 3
    assert "Host pair pair-0\n" in config and "Host pair-1\n" in config
    assert config.count("ProxyJump berth-jump-pair") == 2
    aliases = [line.split()[1] for line in config.splitlines() if "HostKeyAlias" in line]
    pinned = asyncssh.import_known_hosts(render_known_hosts(access))
    expected = [access.jump.host_key, *(n.host_key for n in access.nodes)]
    for alias, key in zip(aliases, expected, strict=True):
        trusted = pinned.match(alias, "", None)[0]
        assert [ssh.public_key_text(k) for k in trusted] == [key]


def test_a_node_without_a_pinned_host_key_gets_no_entry(tmp_path: Path) -> None:
    config = render_config(
        _access(node_key=None), identity=tmp_path / "id", known_hosts=tmp_path / "kh"
    )
    assert "Host pair pair-0" not in config and "Host pair-1\n" in config


def test_the_include_goes_on_top_of_ssh_config_once_and_only_with_consent(tmp_path: Path) -> None:
    ssh_config = tmp_path / ".ssh" / "config"
    pattern = tmp_path / "berth" / "*.config"
    assert not ensure_include(ssh_config, pattern, confirm=lambda _q: False)
    assert not ssh_config.exists()
    ssh_config.parent.mkdir()
    ssh_config.write_text("Host old\n    User me\n")
    assert ensure_include(ssh_config, pattern, confirm=lambda _q: True)
    assert ensure_include(ssh_config, pattern, confirm=lambda _q: False)  # already there
    assert ssh_config.read_text() == f"Include {pattern}\n\nHost old\n    User me\n"
