"""``repos`` and ``files`` as dstack writes them, and where each lands in the container."""

from __future__ import annotations

import pytest

from shared.configuration import parse_run_configuration
from shared.configuration.code import target_path
from shared.configuration.runs import TaskConfiguration
from shared.errors import ConfigError


@pytest.mark.parametrize(
    ("entry", "local", "url", "path"),
    [
        (".", ".", None, None),
        ("..:/my-repo", "..", None, "/my-repo"),
        ("https://github.com/dstackai/dstack", None, "https://github.com/dstackai/dstack", None),
        ("git@github.com:org/repo.git", None, "git@github.com:org/repo.git", None),
        ({"local_path": "..", "path": "/r", "if_exists": "skip"}, "..", None, "/r"),
    ],
)
def test_repo_forms(entry: object, local: str | None, url: str | None, path: str | None) -> None:
    conf = parse_run_configuration_with({"repos": [entry]})
    (repo,) = conf.repos
    assert (repo.local_path, repo.url, repo.path) == (local, url, path)


@pytest.mark.parametrize(
    ("entry", "local", "path"),
    [
        ("train.py", "train.py", None),
        ("../configs:~/configs", "../configs", "~/configs"),
        (".:examples", ".", "examples"),
        ({"local_path": "a", "path": "/b"}, "a", "/b"),
    ],
)
def test_file_forms(entry: object, local: str, path: str | None) -> None:
    (spec,) = parse_run_configuration_with({"files": [entry]}).files
    assert (spec.local_path, spec.path) == (local, path)


def test_a_repo_with_both_a_path_and_a_url_names_the_entry() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_run_configuration_with({"repos": [{"local_path": ".", "url": "https://x/y"}]})
    assert caught.value.field is not None and caught.value.field.startswith("repos.0")
    assert "exactly one of local_path or url" in caught.value.message


@pytest.mark.parametrize(
    ("path", "default", "expected"),
    [
        (None, ".", "'/workflow'"),
        ("/my-repo", ".", "'/my-repo'"),
        ("examples", ".", "'/workflow/examples'"),
        (None, "train.py", "'/workflow/train.py'"),
        ("~/configs", ".", "\"$HOME\"'/configs'"),
        ("~", ".", '"$HOME"'),
        ("/it's", ".", "'/it'\\''s'"),
    ],
)
def test_where_an_entry_lands(path: str | None, default: str, expected: str) -> None:
    assert target_path(path, working_dir="/workflow", default=default) == expected


def parse_run_configuration_with(fields: dict[str, object]) -> TaskConfiguration:
    import yaml

    conf = parse_run_configuration(yaml.safe_dump({"type": "task", "commands": ["x"], **fields}))
    assert isinstance(conf, TaskConfiguration)
    return conf
