"""The user's SSH key: found, or made and registered, so nobody has to PUT it by hand.

Run pods trust the submitter's key as it was when the pod was made, so ``berth
apply`` makes sure one is on file *before* it submits, and ``berth attach``
picks the private key whose public half is the one on file. Berth's own pair
lives in ``~/.berth/ssh/``; ``~/.ssh/id_ed25519`` is used when its public half
is the registered one, and never written.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from cli.client import BerthClient
from cli.console import err
from shared.errors import ConfigError

_KEYGEN_TIMEOUT_S = 30  # ed25519 generation takes milliseconds


def berth_key_path(home: Path) -> Path:
    return home / "ssh" / "id_ed25519"


def ensure_registered_key(client: BerthClient, home: Path) -> Path | None:
    """The private key matching the key on file; one is made and registered if none is.

    None when a key is on file but no local private key matches it (registered
    from another machine): the caller then asks for ``--identity``.
    """
    on_file = client.me().get("ssh_public_key")
    if on_file:
        return find_private_key(home, on_file)
    key = berth_key_path(home)
    made = not key.exists()
    if made:
        _keygen(key)
    client.set_ssh_key(key.with_suffix(".pub").read_text().strip())
    what = f"created {key} and registered" if made else f"registered {key}.pub"
    err.print(f"{what} it as your SSH key (run pods and the jump host trust it)")
    return key


def find_private_key(home: Path, public_key: str) -> Path | None:
    wanted = " ".join(public_key.split()[:2])
    candidates = [berth_key_path(home)]
    candidates += [Path.home() / ".ssh" / n for n in ("id_ed25519", "id_ecdsa", "id_rsa")]
    for private in candidates:
        public = private.with_suffix(".pub")
        try:
            text = public.read_text()
        except OSError:
            continue
        if private.exists() and " ".join(text.split()[:2]) == wanted:
            return private
    return None


def _keygen(key: Path) -> None:
    key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        proc = subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "berth", "-f", str(key)],
            capture_output=True,
            text=True,
            timeout=_KEYGEN_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ConfigError(f"cannot run ssh-keygen to make {key}: {e}", field="identity") from e
    if proc.returncode != 0:
        raise ConfigError(f"ssh-keygen failed for {key}: {proc.stderr.strip()}", field="identity")
