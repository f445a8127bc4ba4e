"""The Dockerfile and its build context, checked without a Docker engine.

The image cannot be built here, so what it would contain is rebuilt the same
way: the build context is filtered by ``.dockerignore``, installed into a fresh
virtualenv with ``pip install .`` (not editable, as the Dockerfile does), and
every command the compose file and the manifests give the image must run from
that install alone.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import yaml

from tests.rbac import load_manifests

ROOT = Path(__file__).resolve().parents[2]
# Imports every module of Berth's packages and prints where each came from.
IMPORT_ALL = """
import importlib, pkgutil
for top in ("shared", "api", "workers", "cli"):
    package = importlib.import_module(top)
    print(package.__file__)
    for info in pkgutil.walk_packages(package.__path__, top + "."):
        print(importlib.import_module(info.name).__file__)
"""
# Runs `berth ARGS --help` for each argument list in argv[1]; prints the failures.
CHECK_COMMANDS = """
import json, sys
from typer.testing import CliRunner
from cli.main import app
failed = {}
for args in json.loads(sys.argv[1]):
    result = CliRunner().invoke(app, [*args, "--help"])
    if result.exit_code != 0:
        failed[" ".join(args)] = result.output
print(json.dumps(failed))
"""
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "python3-dev", "apt-get install")


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    joined = text.replace("\\\n", " ")
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), " ".join(rest.split())))
    return result


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, rest))
    return found


def test_the_image_is_built_in_two_stages_from_python_slim() -> None:
    build, final = stages()
    assert build[0] == ("FROM", "python:3.11-slim-bookworm AS build")
    assert final[0] == ("FROM", "python:3.11-slim-bookworm")


def test_the_final_stage_installs_no_build_tools_and_copies_only_the_virtualenv() -> None:
    final = stages()[-1]
    for keyword, rest in final:
        if keyword == "RUN":
            assert not any(tool in rest for tool in BUILD_TOOLS), rest
    copies = [rest for keyword, rest in final if keyword == "COPY"]
    assert copies == ["--from=build /opt/berth /opt/berth"]


def test_the_image_runs_berth_as_a_numeric_non_root_user() -> None:
    final = dict(stages()[-1])
    user = final["USER"].replace("${BERTH_UID}", final["ARG"].split("=")[1])
    uid, _, gid = user.partition(":")
    assert int(uid) > 0 and int(gid) > 0  # numeric, so runAsNonRoot can check it
    assert final["ENTRYPOINT"] == '["berth"]'
    # Matches the manifests' securityContext.runAsUser for Berth's containers.
    for doc in load_manifests():
        if doc["kind"] == "Deployment":
            assert doc["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)


def test_the_build_context_holds_only_what_the_image_installs() -> None:
    context = build_context_files()
    assert "shared/settings.py" in context
    assert "cli/local/node-pools.yaml" in context  # package data
    assert "constraints.txt" in context  # the image installs the tested versions
    for never in (".env", ".env.example", "tests/conftest.py", "Dockerfile"):
        assert never not in context, never
    assert not any(p.startswith((".venv/", ".git/", "deploy/")) for p in context)
    assert not any("__pycache__" in p for p in context)


def test_the_build_context_installs_a_berth_that_runs_every_service_command(
    tmp_path: Path,
) -> None:
    context = tmp_path / "context"
    for rel in build_context_files():
        (context / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, context / rel)
    venv = tmp_path / "venv"
    # From inside a venv, the venv module builds the new one on the base interpreter.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = venv / "lib" / python / "site-packages"
    # Berth's dependencies come from the test venv (no network); Berth itself does not:
    # a plain path in a .pth file is searched after the venv's own site-packages.
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # As in the Dockerfile, pip builds in isolation: it fetches the build backend
    # (setuptools, per pyproject.toml) from the package index, as `docker build` would.
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "--quiet", "--no-deps", "--no-compile", str(context)],
        check=True,
        timeout=300,
        cwd=tmp_path,
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
    env["BERTH_HOME"] = str(tmp_path / "home")
    # `--help` imports little (commands import lazily), so import every module too.
    imported = subprocess.run(
        [str(venv / "bin" / "python"), "-c", IMPORT_ALL], capture_output=True, text=True,
        check=False, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    files = imported.stdout.split()
    assert len(files) > 40 and all(f.startswith(str(site)) for f in files), files
    entry_point = subprocess.run(
        [str(venv / "bin" / "berth"), "--help"], capture_output=True, text=True,
        check=False, cwd=tmp_path, env=env, timeout=60,
    )  # fmt: skip
    assert entry_point.returncode == 0, entry_point.stderr
    # Each command's options parse (one process for all: an interpreter start costs seconds).
    commands = json.dumps(sorted(image_commands()))
    checked = subprocess.run(
        [str(venv / "bin" / "python"), "-c", CHECK_COMMANDS, commands], capture_output=True,
        text=True, check=False, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout) == {}, checked.stdout


def image_commands() -> set[tuple[str, ...]]:
    """Every argument list given to the image, by the compose file and the manifests."""
    commands: set[tuple[str, ...]] = set()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for service in compose["services"].values():
        if service.get("image", "").startswith("${BERTH_IMAGE"):
            commands.add(tuple(service["command"]))
    for doc in load_manifests():
        if doc["kind"] in ("Deployment", "StatefulSet"):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                if c["image"].startswith("berth:"):
                    commands.add(tuple(c["args"]))
    return commands


def build_context_files() -> set[str]:
    """Files under the repository that docker would send as the build context."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    kept: set[str] = set()
    for directory, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in (".git", ".venv")]
        for name in filenames:
            rel = os.path.relpath(os.path.join(directory, name), ROOT)
            if not _ignored(rel, patterns):
                kept.add(rel)
    return kept


def _ignored(rel: str, patterns: list[str]) -> bool:
    # .dockerignore semantics: the last matching pattern wins, "!" re-includes, and
    # a pattern that matches a directory matches everything below it.
    ignored = False
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.lstrip("!").rstrip("/")
        if body.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(part, body[3:]) for part in parts)
        else:
            hit = any(_match_segments(body, prefix) for prefix in prefixes)
        if hit:
            ignored = not negate
    return ignored


def _match_segments(pattern: str, path: str) -> bool:
    # "*" never crosses a "/", as in Go's filepath.Match that docker uses.
    want, have = pattern.split("/"), path.split("/")
    return len(want) == len(have) and all(
        fnmatch.fnmatchcase(h, w) for w, h in zip(want, have, strict=True)
    )
