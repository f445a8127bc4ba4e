"""Container images for the local real node, built from Debian packages only.

No registry is ever asked: ``mmdebstrap`` makes a root filesystem from Debian's
packages (the one package source these machines reach), this module wraps it
as a docker-archive (``manifest.json``, a config, one ``layer.tar``), and
``ctr images import`` loads it into the node's containerd. Pods name the images
with a registry part (``berth.local/...``) so containerd never expands them to
Docker Hub, and they are never pulled (the tag is already present).

Each archive is cached under ``~/.cache/berth/images`` by a key over its
package list and this file, so only the first build pays for the download and
unpacking; the tag is that key, so a changed image is a new name.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.errors import LocalClusterError

SUITE = "bookworm"  # the Debian release these machines run; its packages are reachable
REGISTRY = "berth.local"
_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Docs, man pages and locales are a third of a minbase root filesystem and no pod reads them.
_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*")
# Part of every image's key: bump it when _debian_archive changes what it makes.
_IMAGE_FORMAT = 1
_BUILD_TIMEOUT_S = 900  # a cold mmdebstrap downloads ~60 MB and unpacks; ~80 s measured

# The sshd kit that the init image carries in /berth/ssh/ and the pod copies to
# /berth/tools/: Debian's sshd with every library it loads and the dynamic
# loader, so it runs in an image that has none of them. ``--argv0`` makes sshd
# see the wrapper as its own path, so its re-exec for each connection goes
# through the wrapper (and the bundled loader) again.
_SSH_KIT_HOOK = r"""
set -eu
root="$1"
kit="$root/berth/ssh"
mkdir -p "$kit/lib"
cp /dev/null "$kit/.keep"
cp "$root/usr/sbin/sshd" "$kit/sshd.bin"
chroot "$root" ldd /usr/sbin/sshd | awk '/=>/ {print $3} !/=>/ && /^\t\// {print $1}' |
  while read -r lib; do cp -L "$root$lib" "$kit/lib/"; done
cat > "$kit/sshd" <<'EOF'
#!/bin/sh
# Debian's sshd with its own libraries and loader (see cli/local/images.py).
kit=$(dirname "$0")
exec "$kit/lib/ld-linux-x86-64.so.2" --argv0 "$0" --library-path "$kit/lib" "$kit/sshd.bin" "$@"
EOF
chmod 755 "$kit/sshd"
cat > "$kit/sshd_config" <<'EOF'
# sshd of the air-gapped init image: keys only, no PAM (the run image may have none).
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AuthorizedKeysFile .ssh/authorized_keys
EOF
"""


# Pods under Pod Security "restricted" run as a UID the image does not know, with
# GID 0 (as OpenShift runs them); sshd only logs in a user it finds in /etc/passwd,
# so the start script appends one, which group 0 may do here (OpenShift's own
# recipe for arbitrary UIDs, without nss_wrapper). Only root's group can write it.
_PASSWD_HOOK = r"""
set -eu
chmod 0664 "$1/etc/passwd"
"""


# Debian's Docker (20.10) predates the compose plugin, and bookworm ships Compose v1
# as the `docker-compose` command: this plugin makes `docker compose ...` (what
# dstack's examples write) run it. The CLI asks a plugin for its metadata first.
_COMPOSE_PLUGIN_HOOK = r"""
set -eu
plugins="$1/usr/libexec/docker/cli-plugins"
mkdir -p "$plugins"
cat > "$plugins/docker-compose" <<'EOF'
#!/bin/sh
# `docker compose` as Debian's docker-compose (v1); see cli/local/images.py.
if [ "${1:-}" = docker-cli-plugin-metadata ]; then
  echo '{"SchemaVersion":"0.1.0","Vendor":"Berth","ShortDescription":"Docker Compose (v1)"}'
  exit 0
fi
shift
exec docker-compose "$@"
EOF
chmod 755 "$plugins/docker-compose"
"""


@dataclass(frozen=True)
class ImageSpec:
    name: str
    packages: tuple[str, ...]
    hook: str = ""
    """A shell script run with the root filesystem's path as $1 after packages are in."""


# The base run image has what dstack's images offer a shell user; the jump host
# needs only sshd; the "nosshd" image is for the air-gapped init path; the init
# image carries the sshd kit (and is a complete sshd image too); "dind" is Docker.
IMAGES = (
    ImageSpec(
        "run",
        ("bash", "python3", "openssh-server", "coreutils", "procps", "iproute2", "curl"),
        hook=_PASSWD_HOOK,
    ),
    ImageSpec("jump", ("openssh-server",), hook=_PASSWD_HOOK),
    ImageSpec("nosshd", ("bash", "python3", "coreutils", "procps", "iproute2")),
    ImageSpec("sshd-init", ("openssh-server",), hook=_SSH_KIT_HOOK),
    # docker: true (the server's dind_image, workers/dind.py): dockerd, its CLI and
    # Compose; a static busybox is a whole root filesystem for `docker import`, the
    # one way to make an image where nothing can be pulled.
    ImageSpec(
        "dind",
        (
            "bash",
            "coreutils",
            "procps",
            "iproute2",
            "openssh-server",
            "docker.io",
            "docker-compose",
            "busybox-static",
        ),
        hook=_COMPOSE_PLUGIN_HOOK,
    ),
)

Progress = Callable[[str], None]


def image_ref(spec: ImageSpec) -> str:
    return f"{REGISTRY}/{spec.name}:{_key(spec.packages, spec.hook)}"


def pause_ref(pause_binary: Path) -> str:
    digest = hashlib.sha256(pause_binary.read_bytes()).hexdigest()[:12]
    return f"{REGISTRY}/pause:{digest}"


def build_all(
    cache_dir: Path, pause_binary: Path, *, progress: Progress = lambda _m: None
) -> dict[str, Path]:
    """Every image's docker-archive, building those not cached; name -> archive path."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    archives = {"pause": _pause_archive(cache_dir, pause_binary)}
    for spec in IMAGES:
        archives[spec.name] = _debian_archive(cache_dir, spec, progress=progress)
    return archives


def import_archives(ctr: list[str], archives: dict[str, Path], refs: dict[str, str]) -> None:
    """Load into containerd's ``k8s.io`` namespace the images it lacks (``ctr`` argv prefix)."""
    present = set(_ctr([*ctr, "images", "ls", "-q"]).split())
    for name, archive in archives.items():
        if refs[name] in present:
            continue
        _ctr([*ctr, "images", "import", "--no-unpack=false", str(archive)], timeout=300)


def _debian_archive(cache_dir: Path, spec: ImageSpec, *, progress: Progress) -> Path:
    ref = image_ref(spec)
    out = cache_dir / f"{spec.name}-{ref.rsplit(':', 1)[1]}.tar"
    if out.exists():
        return out
    if shutil.which("mmdebstrap") is None:
        raise LocalClusterError("mmdebstrap is missing: run scripts/install.sh (apt-get install)")
    progress(f"building image {ref} from Debian packages (cached afterwards)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        argv = [
            "mmdebstrap",
            "--quiet",
            "--variant=minbase",
            f"--include={','.join(spec.packages)}",
            *(f"--dpkgopt=path-exclude={p}" for p in _EXCLUDES),
            # Host keys made by openssh-server's postinst would be shared by every pod.
            '--customize-hook=rm -f "$1"/etc/ssh/ssh_host_*',
        ]
        if spec.hook:
            hook = Path(tmp) / "hook.sh"
            hook.write_text(spec.hook)
            argv.append(f'--customize-hook=sh {hook} "$1"')
        argv += [SUITE, str(rootfs)]
        _run(argv, timeout=_BUILD_TIMEOUT_S, what=f"mmdebstrap of {spec.name}")
        config = {"Env": [_PATH_ENV], "Cmd": ["/bin/sh"]}
        _write_docker_archive(out, ref, rootfs, config)
    progress(f"image {ref} built in {time.monotonic() - started:.0f}s")
    return out


def _pause_archive(cache_dir: Path, pause_binary: Path) -> Path:
    ref = pause_ref(pause_binary)
    out = cache_dir / f"pause-{ref.rsplit(':', 1)[1]}.tar"
    if out.exists():
        return out
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        layer = Path(tmp) / "layer.tar"
        with tarfile.open(layer, "w") as tar:
            info = tar.gettarinfo(str(pause_binary), arcname="pause")
            info.mode, info.uid, info.gid, info.uname, info.gname = 0o755, 0, 0, "", ""
            with pause_binary.open("rb") as f:
                tar.addfile(info, f)
        _write_docker_archive(out, ref, layer, {"Entrypoint": ["/pause"], "Env": [_PATH_ENV]})
    return out


def _write_docker_archive(out: Path, ref: str, layer: Path, config: Mapping[str, object]) -> None:
    """A docker-archive (``docker save`` layout) with one layer; written atomically."""
    diff_id = "sha256:" + _sha256_file(layer)
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    config_bytes = json.dumps(image_config).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": ["layer.tar"]}]
    tmp = out.with_suffix(".partial")
    with tarfile.open(tmp, "w") as tar:
        _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
        _add_bytes(tar, config_name, config_bytes)
        tar.add(str(layer), arcname="layer.tar")
    os.replace(tmp, out)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _key(packages: tuple[str, ...], hook: str) -> str:
    text = "\n".join((str(_IMAGE_FORMAT), SUITE, *packages, *_EXCLUDES, hook))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _ctr(argv: list[str], *, timeout: float = 60) -> str:
    return _run(argv, timeout=timeout, what=" ".join(argv[-3:]))


def _run(argv: list[str], *, timeout: float, what: str) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise LocalClusterError(f"{what} did not finish within {timeout:.0f}s") from e
    except OSError as e:
        raise LocalClusterError(f"cannot run {argv[0]}: {e}") from e
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise LocalClusterError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout
