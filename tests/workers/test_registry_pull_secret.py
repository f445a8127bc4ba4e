"""The image pull secret: credentials resolved from the run's env and project secrets."""

from __future__ import annotations

import base64
import json

from shared.configuration.parse import parse_run_configuration
from shared.state.records import Job, Placement, Run
from workers.podspec import PodContext, build_job_objects


def test_registry_credentials_take_the_runs_env_value_then_its_secrets() -> None:
    conf = parse_run_configuration(
        "type: task\nname: nim\nimage: nvcr.io/nim/llama:1\ncommands: [serve]\n"
        "env: [NGC_API_KEY=nvapi-123, 'USER_REF=${{ secrets.ngc_user }}']\n"
        "registry_auth: {username: '${{ env.USER_REF }}', password: '${{ env.NGC_API_KEY }}'}\n"
    )
    run = Run(
        id="r1",
        project="main",
        name="nim",
        user="alice",
        configuration=conf.model_dump(mode="json"),
        configuration_type="task",
    )
    job = Job(id="j1", run_id="r1", project="main", run_name="nim", placement=Placement(node="n"))
    ctx = PodContext(default_image="berth.local/run:x", secret_values={"ngc_user": "$oauthtoken"})
    secret = build_job_objects(run, job, conf, ctx).secret
    assert secret is not None
    docker = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    auth = docker["auths"]["nvcr.io"]
    assert (auth["username"], auth["password"]) == ("$oauthtoken", "nvapi-123")
