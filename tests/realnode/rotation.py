"""Every file the kubelet rotates away under a running container, kept for a test to read.

The kubelet's follow of a container's log (``k8s.io/cri-client`` v0.36.3,
``pkg/logs/logs.go``, ``ReadLogs``) moves to the new file as soon as it is created,
without reading on to the end of the old one. containerd swaps a container's log
writer only after it has created the new file, and the old writer's last lines
still land in the old file: those lines are served to no reader of the log API,
``kubectl logs -f`` or Berth. A test that expects every line keeps each rotated file
(a hard link made as it appears, so later writes and the kubelet's deletion do not
matter) and tells that loss apart from anything else: :func:`kubelet_losses`.
"""

from __future__ import annotations

import gzip
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

POLL_S = 0.02  # a rotated file lives until the next rotation (>= 3 s on the real nodes)
# <restart count>.log.<YYYYmmdd-HHMMSS>, then compressed (.gz) at a later rotation.
ROTATED = re.compile(r"\d+\.log\.\d{8}-\d{6}(\.gz)?")


class KubeletLostLines(UserWarning):
    """Lines a test expected that the kubelet never served: listed in pytest's warnings
    summary, so a run that met the loss says how many."""


class RotatedFiles:
    """Hard-links each rotated log file of one container into ``keep`` while it runs."""

    def __init__(
        self,
        roots: Iterable[Path],
        namespace: str,
        pod_name: Callable[[], str | None],
        keep: Path,
        container: str = "main",
    ) -> None:
        self._roots = list(roots)
        self._namespace = namespace
        self._pod_name = pod_name
        self._container = container
        self._keep = keep
        self._kept: dict[str, Path] = {}  # rotated name, .gz or not -> its hard link
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rotated-files", daemon=True)
        self.found: Path | None = None
        """The container's log directory, once seen."""

    def __enter__(self) -> RotatedFiles:
        self._keep.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def files(self) -> list[list[str]]:
        """The kept files' lines (the log's own text, CRI prefix removed), oldest first."""
        return [_cri_lines(self._kept[name]) for name in sorted(self._kept)]

    def _loop(self) -> None:
        pod = None
        while not self._stop.wait(POLL_S):
            if pod is None:
                pod = self._pod_name()  # an API call: not every poll
                self._stop.wait(0.2)
                continue
            if self.found is None:
                self.found = self._directory(pod)
                continue
            self._keep_new()

    def _directory(self, pod: str) -> Path | None:
        for root in self._roots:
            for found in root.glob(f"{self._namespace}_{pod}_*/{self._container}"):
                return found
        return None

    def _keep_new(self) -> None:
        assert self.found is not None
        try:
            names = os.listdir(self.found)
        except FileNotFoundError:  # the pod is gone
            return
        for name in names:
            base = name.removesuffix(".gz")
            if not ROTATED.fullmatch(name) or base in self._kept:
                continue  # the current file, a compression's temporary one, or kept
            link = self._keep / name
            try:
                os.link(self.found / name, link)
            except FileNotFoundError:  # compressed or deleted between listing and link
                continue
            self._kept[base] = link


def kubelet_losses(expected: list[str], stored: list[str], rotated: list[list[str]]) -> int:
    """How many of ``expected`` the kubelet never served, after checking that everything
    else is Berth's to answer for: the stored lines are ``expected`` in order, each
    once; and each run of missing lines is the end of one rotated file whose first line
    was stored (the follow was reading that file and moved on before its end). A
    missing line anywhere else, a whole rotated file missing (a reader more than one
    rotation behind) or a line out of order or twice fails with what was seen.
    """
    stored_set = set(stored)
    assert len(stored_set) == len(stored), _doubled(stored)
    in_order = [line for line in expected if line in stored_set]
    assert stored == in_order, "stored lines out of order, or not printed by the job"
    where = {line: (i, at) for i, lines in enumerate(rotated) for at, line in enumerate(lines)}
    lost = 0
    for run in _missing_runs(expected, stored_set):
        found = where.get(run[0])
        assert found is not None, (
            f"{len(run)} lines missing ({run[0]!r} .. {run[-1]!r}), not in any of"
            f" the {len(rotated)} rotated files kept"
        )
        first, tail = rotated[found[0]][0], rotated[found[0]][found[1] :]
        assert tail == run, (
            f"{len(run)} lines missing ({run[0]!r} .. {run[-1]!r}), not the whole rest of"
            f" their rotated file ({len(tail)} lines from there to its end)"
        )
        assert first in stored_set, f"a whole rotated file missing, from {first!r}"
        lost += len(run)
    return lost


def _missing_runs(expected: list[str], stored: set[str]) -> list[list[str]]:
    runs: list[list[str]] = []
    current: list[str] = []
    for line in expected:
        if line in stored:
            if current:
                runs.append(current)
                current = []
        else:
            current.append(line)
    if current:
        runs.append(current)
    return runs


def _cri_lines(path: Path) -> list[str]:
    """Each CRI log line's text (``<time> <stream> <F|P> <text>``); the tests' lines are
    short, so every one is whole (``F``)."""
    raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    return [line.split(" ", 3)[3] for line in raw.decode().splitlines() if line.count(" ") >= 3]


def _doubled(stored: list[str]) -> str:
    twice = [line for line, n in Counter(stored).items() if n > 1]
    return f"{len(twice)} lines stored twice: {twice[:3]}"
