"""The user's code reaches the run: ``repos`` and ``files`` on real pods.

``berth apply -f`` packs the directory of the configuration file (honouring
``.gitignore`` and ``.dstackignore``), the API keeps the archive, the worker
puts it in Secrets the pod mounts, and the pod's script unpacks it before the
commands run: no network, no git in the cluster.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.realnode.world import SMALL, apply_and_follow
from tests.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.realnode]


def test_repos_dot_runs_the_users_script_and_files_land_where_they_say(
    real_stack: Stack, tmp_path: Path
) -> None:
    project = tmp_path
    (project / "train.py").write_text(
        textwrap.dedent(
            """
            import os, pathlib
            from lib.maths import total
            print(f"sum={total(100)} cwd={os.getcwd()}")
            print("ignored present:", pathlib.Path("model.ckpt").exists())
            print("dstackignored present:", pathlib.Path("scratch").exists())
            """
        )
    )
    (project / "lib").mkdir()
    (project / "lib" / "__init__.py").write_text("")
    (project / "lib" / "maths.py").write_text("def total(n):\n    return sum(range(n + 1))\n")
    (project / "model.ckpt").write_bytes(b"\0" * 4096)
    (project / ".gitignore").write_text("*.ckpt\n")
    (project / "scratch").mkdir()
    (project / "scratch" / "junk.txt").write_text("junk")
    (project / ".dstackignore").write_text("scratch/\n")
    subprocess.run(["git", "init", "-q", str(project)], check=True, timeout=30)
    extra = tmp_path.parent / f"{tmp_path.name}-extra"
    extra.mkdir()
    (extra / "settings.txt").write_text("lr=0.1\n")
    result = apply_and_follow(
        real_stack,
        project,
        f"""
        type: task
        name: with-code
        repos: [.]
        files:
          - ../{extra.name}/settings.txt:~/conf/settings.txt
        commands:
          - python3 train.py
          - cat ~/conf/settings.txt
        {SMALL}
        """,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "sent the run's code" in out
    assert "sum=5050 cwd=/workflow" in out, out
    assert "ignored present: False" in out and "dstackignored present: False" in out, out
    assert "lr=0.1" in out, out
    assert "with-code: done" in out, out
