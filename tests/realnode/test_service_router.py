"""A service whose replica groups ask for different resources, one of them its router.

The router group runs a small router of the test's own (``ROUTER``, sent with
``files``) that speaks the SGLang router's worker API (``GET``/``POST /workers``,
``DELETE /workers/<id>``) and forwards every other request to a worker it was
told about. Nothing tells it about workers but Berth (``workers/service_routers.py``,
through the apiserver's pod proxy), and nothing sends it requests but Berth's
proxy, which sends the service's requests to the router group alone.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import httpx
import pytest

from shared import kube
from tests.polling import wait_until
from tests.realnode.world import START_S, apply, running, stop
from tests.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.realnode]

ROUTER = """
import http.server, json, urllib.request

workers = {}


class Router(http.server.BaseHTTPRequestHandler):
    def _send(self, code, body):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/workers":
            return self._send(200, {"workers": list(workers.values())})
        if not workers:
            return self._send(503, b"no worker yet")
        url = next(iter(workers.values()))["url"] + self.path
        with urllib.request.urlopen(url, timeout=5) as answer:
            self._send(200, b"via router: " + answer.read())

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        worker_id = f"w{len(workers) + 1}"
        workers[worker_id] = {"id": worker_id, **body}
        print("registered", body, flush=True)
        self._send(202, {"status": "accepted"})

    def do_DELETE(self):
        workers.pop(self.path.rsplit("/", 1)[-1], None)
        self._send(202, {"status": "accepted"})


http.server.ThreadingHTTPServer(("0.0.0.0", 8000), Router).serve_forever()
"""


def test_the_proxy_sends_requests_to_the_router_and_berth_tells_it_the_workers(
    real_stack: Stack, real_kube: kube.Kube, tmp_path: Path
) -> None:
    (tmp_path / "router.py").write_text(textwrap.dedent(ROUTER))
    name = apply(
        real_stack,
        tmp_path,
        """
        type: service
        name: routed
        port: 8000
        auth: false
        files: [router.py]
        replicas:
          - count: 1
            router: {type: sglang}
            commands: [python3 router.py]
            resources: {gpu: 1, cpu: 1.., memory: 0.1GB..}
          - name: workers
            count: 1
            commands:
              - mkdir -p /tmp/site && echo "worker $(hostname)" > /tmp/site/who
              - python3 -m http.server 8000 -d /tmp/site
            resources: {gpu: 1, cpu: 1.., memory: 0.25GB..}
        """,
    )
    url = f"{real_stack.url}/proxy/services/main/{name}"
    try:
        live = running(real_stack, name)
        jobs = {j["group"]: j for j in live["jobs"]}
        assert set(jobs) == {"0", "workers"}, live["jobs"]
        worker = jobs["workers"]

        def routed() -> str | None:
            answer = httpx.get(f"{url}/who", timeout=10)
            return answer.text if answer.status_code == 200 else None

        text = wait_until(routed, timeout=START_S, what="a request through the router")
        assert text == f"via router: worker {worker['pod_name']}\n", text
        listed = json.loads(httpx.get(f"{url}/workers", timeout=10).text)["workers"]
        assert [(w["url"], w["worker_type"]) for w in listed] == [
            (f"http://{worker['pod_ip']}:8000", "regular")
        ]  # once: the sync runs every few seconds and adds nothing twice

        # Each group's pods request that group's resources.
        memory = {
            group: real_kube.call(
                real_kube.core.read_namespaced_pod, job["pod_name"], real_stack.namespace
            )
            .spec.containers[0]
            .resources.requests["memory"]
            for group, job in jobs.items()
        }
        assert memory["0"] != memory["workers"], memory
    finally:
        stop(real_stack, name)
