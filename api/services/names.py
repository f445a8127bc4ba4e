"""Readable run names (``brave-otter-1``) for configurations without ``name``."""

from __future__ import annotations

import secrets

_ADJECTIVES = (
    "brave",
    "calm",
    "eager",
    "fancy",
    "gentle",
    "happy",
    "jolly",
    "keen",
    "lucky",
    "merry",
    "nimble",
    "proud",
    "quick",
    "rapid",
    "shiny",
    "swift",
    "tidy",
    "vivid",
    "witty",
    "zesty",
)
_NOUNS = (
    "otter",
    "falcon",
    "lynx",
    "heron",
    "panda",
    "tiger",
    "whale",
    "koala",
    "raven",
    "bison",
    "gecko",
    "moose",
    "crane",
    "hyena",
    "lemur",
    "orca",
    "puffin",
    "stork",
    "walrus",
    "yak",
)


def random_run_name() -> str:
    # 20*20*1000 names; a clash only means the store refuses and we pick again.
    adjective = secrets.choice(_ADJECTIVES)
    noun = secrets.choice(_NOUNS)
    return f"{adjective}-{noun}-{secrets.randbelow(1000)}"
