"""Extract dstack's documented configuration examples into Berth's test corpus.

Usage::

    python scripts/dstack_doc_examples.py GIT_DIR [--commit REV] [--out DIR]

``GIT_DIR`` is a (bare) clone of github.com/dstackai/dstack; nothing is checked
out, every file is read with ``git show``. The sources are the documentation
pages (``mkdocs/docs/**/*.md``, or ``docs/**/*.md`` in older layouts), the
example READMEs (``examples/**/*.md``) and the example configurations
(``examples/**/*.yml`` and ``.yaml``, most named ``*.dstack.yml``). The blog is
left out: its posts are dated announcements, not documentation kept current.

Every fenced ```yaml block (and example file) whose top-level ``type`` is task,
dev-environment, service or fleet becomes one file ``<doc-path-slug>-<n>.dstack.yml``
in the output folder, opening with a comment naming its source path and commit.
A block that is not a YAML mapping on its own (broken YAML, a fragment cut from a
larger file) is skipped and reported with the reason. Identical texts are written
once, under the first name. The output folder's ``*.dstack.yml`` files and
``SOURCE.md`` are replaced as a whole.
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import subprocess
import sys
import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPOSITORY = "dstackai/dstack"
TYPES = ("task", "dev-environment", "service", "fleet")
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "tests" / "shared" / "dstack_docs_examples"
SOURCE_PATTERNS = (
    "mkdocs/docs/**.md",
    "docs/**.md",
    "examples/**.md",
    "examples/**.yml",  # mostly *.dstack.yml, but not all; the type check filters
    "examples/**.yaml",
)

# An opening fence: indentation (inside admonitions and tabs), then ```yaml with
# optional attributes (``hl_lines="2"``, ``title=...``).
_FENCE_OPEN_RE = re.compile(r"^(?P<indent>[ \t]*)```ya?ml\b.*$")
_FENCE_CLOSE_RE = re.compile(r"^[ \t]*```[ \t]*$")
# mkdocs markup that can sit on a line of its own inside a block: HTML tags such as
# anchors (``<span id="x"></span>``) and editor frames (``<div editor-title=...>``).
_MARKUP_LINE_RE = re.compile(r"^[ \t]*(?:</?[a-zA-Z][^>]*>)+[ \t]*$")
_TYPE_LINE_RE = re.compile(r"^type:[ \t]*['\"]?(?P<type>[a-z-]+)['\"]?[ \t]*(?:#.*)?$", re.M)


@dataclass(frozen=True)
class Block:
    """One candidate example: where it came from and its text, markup removed."""

    path: str
    text: str


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str
    text: str


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("git_dir", type=Path, help="a clone of github.com/dstackai/dstack")
    parser.add_argument("--commit", default="HEAD", help="revision to read (default: HEAD)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    args = parser.parse_args(argv)

    sha = _git(args.git_dir, "rev-parse", f"{args.commit}^{{commit}}").strip()
    written, skipped, duplicates = extract(args.git_dir, sha=sha, out=args.out)

    for item in skipped:
        _say(f"skipped {item.path}: {item.reason}")
        _say("".join(f"    | {line}\n" for line in item.text.splitlines()))
    kinds = Counter(kind for kind in written.values())
    _say(f"dstack commit {sha}")
    _say(f"written {len(written)} examples to {args.out}: {dict(sorted(kinds.items()))}")
    _say(f"skipped {len(skipped)} blocks that are not YAML mappings on their own")
    _say(f"left out {duplicates} duplicates")
    return 0


def extract(git_dir: Path, *, sha: str, out: Path) -> tuple[dict[str, str], list[Skipped], int]:
    """Write the corpus for commit ``sha`` to ``out``.

    Returns the written file names with their types, the skipped blocks and the
    number of duplicates left out.
    """
    blocks: list[Block] = []
    for path in _source_paths(git_dir, sha):
        text = _git(git_dir, "show", f"{sha}:{path}")
        if path.endswith(".md"):
            blocks.extend(Block(path, body) for body in yaml_blocks(text))
        else:
            blocks.append(Block(path, text))

    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.dstack.yml"):
        old.unlink()
    written: dict[str, str] = {}
    skipped: list[Skipped] = []
    seen: set[str] = set()
    duplicates = 0
    per_source: Counter[str] = Counter()
    for block in blocks:
        kind = _documented_type(block.text)
        if kind is None:
            continue
        problem = _not_a_mapping(block.text, kind)
        if problem is not None:
            skipped.append(Skipped(block.path, problem, block.text))
            continue
        body = block.text.strip("\n") + "\n"
        if body in seen:
            duplicates += 1
            continue
        seen.add(body)
        per_source[block.path] += 1
        name = f"{_slug(block.path)}-{per_source[block.path]}.dstack.yml"
        if name in written:
            raise SystemExit(f"two sources slug to {name}; extend _slug()")
        header = f"# Source: {REPOSITORY}@{sha}:{block.path}\n"
        (out / name).write_text(header + body)
        written[name] = kind
    (out / "SOURCE.md").write_text(_source_note(sha))
    return written, skipped, duplicates


def yaml_blocks(markdown: str) -> list[str]:
    """The bodies of the ```yaml fences of ``markdown``, dedented, mkdocs markup removed."""
    blocks: list[str] = []
    lines = markdown.splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE_OPEN_RE.match(lines[index])
        index += 1
        if opening is None:
            continue
        indent = len(opening.group("indent").expandtabs())
        body: list[str] = []
        while index < len(lines) and not _FENCE_CLOSE_RE.match(lines[index]):
            body.append(_dedent(lines[index], indent))
            index += 1
        index += 1  # the closing fence
        kept = "".join(f"{line}\n" for line in body if not _MARKUP_LINE_RE.match(line))
        # Some pages indent the body past the fence as well.
        blocks.append(textwrap.dedent(kept))
    return blocks


def _source_paths(git_dir: Path, sha: str) -> list[str]:
    names = _git(git_dir, "ls-tree", "-r", "--name-only", sha).splitlines()
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in SOURCE_PATTERNS)]


def _documented_type(text: str) -> str | None:
    """The example's type when a top-level ``type:`` line names one of TYPES."""
    for match in _TYPE_LINE_RE.finditer(text):
        if match.group("type") in TYPES:
            return match.group("type")
    return None


def _not_a_mapping(text: str, kind: str) -> str | None:
    """Why ``text`` is not a configuration on its own, or ``None`` when it is one."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return f"invalid YAML: {' '.join(str(e).split())}"
    if not isinstance(data, dict):
        return f"the top level is a {type(data).__name__}, not a mapping"
    if data.get("type") != kind:
        return f"the top-level type is {data.get('type')!r}, not {kind!r}"
    return None


def _dedent(line: str, indent: int) -> str:
    expanded = line.expandtabs()
    strip = min(indent, len(expanded) - len(expanded.lstrip(" ")))
    return expanded[strip:].rstrip()


def _slug(path: str) -> str:
    """``mkdocs/docs/concepts/tasks.md`` → ``docs-concepts-tasks``; ``examples/a/.dstack.yml``
    → ``examples-a``. Pages keep their ``docs`` prefix: ``docs/examples/`` mirrors ``examples/``."""
    path = path.removeprefix("mkdocs/")
    path = re.sub(r"\.(md|(dstack\.)?ya?ml)$", "", path)
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")


def _source_note(sha: str) -> str:
    return (
        "# dstack documentation examples\n\n"
        f"Extracted by `scripts/dstack_doc_examples.py` from the {REPOSITORY} documentation\n"
        f"(`mkdocs/docs/`, `examples/`) at commit `{sha}`\n"
        f"(https://github.com/{REPOSITORY}/tree/{sha}).\n\n"
        "dstack is licensed under the Mozilla Public License 2.0 (MPL-2.0).\n"
        "These files are test data only: each is one documented configuration example,\n"
        "unchanged apart from mkdocs markup lines and indentation, opening with a comment\n"
        "that names its source file. The blog is not included.\n"
        "Regenerate them with the script; do not edit by hand.\n"
    )


def _git(git_dir: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "--git-dir", str(git_dir), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,  # a local read; a minute means something is wrong
    )
    return result.stdout


def _say(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


if __name__ == "__main__":
    sys.exit(main())
