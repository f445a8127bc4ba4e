"""`berth local up` refuses options it cannot honour before it starts anything."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.stack import BERTH


def test_more_api_processes_than_one_port_takes_are_refused_naming_the_option(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "BERTH_HOME": str(tmp_path / "berth"), "COLUMNS": "200"}
    result = subprocess.run(
        [BERTH, "local", "up", "--api-processes", "9", "--no-real-node", "--no-example"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--api-processes" in result.stderr and "less than or equal to 4" in result.stderr, (
        result.stderr
    )
    assert not (tmp_path / "berth" / "local").exists()  # nothing was started
