"""Every configuration example in dstack's documentation parses, or is refused by name.

The corpus in ``dstack_docs_examples/`` is extracted by ``scripts/dstack_doc_examples.py``
(see its ``SOURCE.md``). An example either parses, or fails with Berth's
"not supported by Berth yet: <field>": any other error is a bug in Berth's parser,
except for the few excerpts listed below, which dstack refuses as well.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from shared.configuration.parse import parse_configuration
from shared.errors import ConfigError, NotSupportedError

CORPUS = Path(__file__).parent / "dstack_docs_examples"
EXAMPLES = sorted(CORPUS.glob("*.dstack.yml"))
TYPES = ("task", "dev-environment", "service", "fleet")

# Examples that parse completely today. Raise it when Berth learns a field; a drop
# means a documented example stopped parsing.
FULLY_PARSED = 192

# Excerpts: the page shows only the lines it talks about and leaves out a part every
# configuration of the type needs (dstack refuses them too). Berth must name that part.
EXCERPTS = {
    "docs-concepts-secrets-1.dstack.yml": "port",  # `commands: ...`, no port
    "docs-concepts-secrets-2.dstack.yml": "port",
    "docs-concepts-backends-2.dstack.yml": "commands",  # availability_zones only
    "docs-concepts-volumes-4.dstack.yml": "commands",  # volumes only
    "docs-concepts-volumes-5.dstack.yml": "commands",
    "docs-concepts-volumes-6.dstack.yml": "commands",
    # Mis-indented on the page: `gpu:` sits at the top level instead of under
    # `resources:` (dstack's own parser refuses the unknown top-level key too).
    "docs-guides-migration-slurm-4.dstack.yml": "gpu",
    "docs-guides-migration-slurm-5.dstack.yml": "gpu",  # the same page, the same slip
    # `name: /docker-volume` with `optional:` where `instance_path:` was meant: dstack's
    # VolumeMountPoint has no `optional` (and forbids unknown keys) either.
    "docs-guides-protips-4.dstack.yml": "volumes.0.optional",
}

COMPLETE = [path for path in EXAMPLES if path.name not in EXCERPTS]
_HEADER_RE = re.compile(r"# Source: dstackai/dstack@(?P<sha>[0-9a-f]{40}):(?P<path>\S+)\n")


def _documented_type(path: Path) -> str:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return str(data["type"])


def _parses(path: Path) -> bool:
    try:
        parse_configuration(path.read_text(), source=path.name)
    except NotSupportedError:
        return False
    return True


@pytest.mark.parametrize("path", COMPLETE, ids=lambda p: p.name)
def test_a_documented_example_parses_or_is_refused_as_not_supported_yet(path: Path) -> None:
    try:
        conf = parse_configuration(path.read_text(), source=path.name)
    except ConfigError as e:
        assert isinstance(e, NotSupportedError), f"not a 'not supported yet' refusal: {e}"
        assert "not supported by Berth yet:" in e.message
        return
    assert conf.type == _documented_type(path)


@pytest.mark.parametrize("path", COMPLETE, ids=lambda p: p.name)
def test_a_refusal_says_why_beyond_naming_the_field(path: Path) -> None:
    try:
        parse_configuration(path.read_text(), source=path.name)
    except NotSupportedError as e:
        said = e.message.removeprefix("not supported by Berth yet: ").split(" (in ")[0]
        assert e.field is not None and said.startswith(e.field), e.message
        why = said.removeprefix(e.field)
        assert len(why) > 20, f"names {e.field} but not why: {e.message}"


@pytest.mark.parametrize("name", sorted(EXCERPTS))
def test_an_excerpt_is_refused_for_the_part_it_leaves_out(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_configuration((CORPUS / name).read_text(), source=name)
    assert not isinstance(caught.value, NotSupportedError)
    assert caught.value.field == EXCERPTS[name]


def test_the_corpus_covers_every_run_type_and_fleets() -> None:
    kinds = Counter(_documented_type(path) for path in EXAMPLES)
    assert set(kinds) == set(TYPES)
    assert all(kinds[kind] > 0 for kind in TYPES), kinds


def test_every_example_names_its_source_at_the_commit_source_md_gives() -> None:
    note = (CORPUS / "SOURCE.md").read_text()
    for path in EXAMPLES:
        header = _HEADER_RE.match(path.read_text())
        assert header is not None, path.name
        assert header["sha"] in note, path.name


def test_the_corpus_holds_each_example_once() -> None:
    bodies = Counter(path.read_text().split("\n", 1)[1] for path in EXAMPLES)
    assert [body for body, count in bodies.items() if count > 1] == []


def test_the_number_of_examples_that_parse_completely_does_not_change_unnoticed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parsed = sum(_parses(path) for path in COMPLETE)
    with capsys.disabled():
        sys.stdout.write(
            f"\ndstack docs corpus: {parsed} of {len(EXAMPLES)} examples parse completely,"
            f" {len(EXAMPLES) - parsed - len(EXCERPTS)} are refused as not supported yet,"
            f" {len(EXCERPTS)} are excerpts\n"
        )
    assert parsed == FULLY_PARSED, (
        f"{parsed} examples parse completely, FULLY_PARSED says {FULLY_PARSED}: update it"
        " if Berth learned a field, otherwise find the example that stopped parsing"
    )
