"""``dstack: true`` on a real pod: the run reaches this server as its project's member.

The pod gets ``BERTH_URL`` and ``BERTH_PROJECT``; the token comes from a project
secret, as a user would pass it. The API listens on loopback only, so the real
stack's ``api.url_for_runs`` is a relay on the node's bridge address
(``tests/relay.py``); the pod asks the API about its own run with curl, the way
any client in the image would.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.realnode.world import SMALL, apply_and_follow, set_secret
from tests.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.realnode]


def test_a_run_with_dstack_true_asks_the_server_about_itself(
    real_stack: Stack, tmp_path: Path
) -> None:
    set_secret(real_stack, "berth_token", real_stack.admin_token)
    result = apply_and_follow(
        real_stack,
        tmp_path,
        f"""
        type: task
        name: berth-in-berth
        dstack: true
        env:
          - BERTH_TOKEN=${{{{ secrets.berth_token }}}}
        commands:
          - echo "project=$BERTH_PROJECT"
          # The pod can start before Berth has seen it running: ask until it has.
          - >-
            for i in $(seq 30); do
            curl -sf --max-time 20 -H "Authorization: Bearer $BERTH_TOKEN"
            -o /tmp/me.json "$BERTH_URL/api/projects/$BERTH_PROJECT/runs/berth-in-berth";
            python3 -c "import json, sys; r = json.load(open('/tmp/me.json'));
            sys.exit(r['status'] != 'running')" && break; sleep 1; done
          - >-
            python3 -c "import json; r = json.load(open('/tmp/me.json'));
            print('me:', r['name'], r['status'])"
        {SMALL}
        """,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "project=main" in result.stdout
    assert "me: berth-in-berth running" in result.stdout, result.stdout
    assert real_stack.admin_token not in result.stdout  # the token itself is never printed
