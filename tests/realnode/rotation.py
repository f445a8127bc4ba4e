"""Every file the kubelet rotates away under a running container, kept for a test to read.

The kubelet's follow of a container's log (``k8s.io/cri-client`` v0.36.3,
``pkg/logs/logs.go``, ``ReadLogs``) moves to the new file as soon as it is created,
without reading on to the end of the old one. containerd swaps a container's log
writer only after it has created the new file, and the old writer's last lines
still land in the old file: those lines are served to no reader of the log API,
``kubectl logs -f`` or Berth. A test that expects every line keeps each rotated file
(a hard link made as it appears, so later writes and the kubelet's deletion do not
matter) and tells that loss apart from anything else: :func:`kubelet_losses`.

A line can also be torn at a rotation (seen once in 200,000 lines): the old file ends
with a partial CRI record (``P``) holding the line's start, and the new file begins with
its rest. A follow that moved on early serves that rest alone, as a line of its own.
"""

from __future__ import annotations

import gzip
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

POLL_S = 0.02  # a rotated file lives until the next rotation (>= 3 s on the real nodes)
# <restart count>.log.<YYYYmmdd-HHMMSS>, then compressed (.gz) at a later rotation.
ROTATED = re.compile(r"\d+\.log\.\d{8}-\d{6}(\.gz)?")


class KubeletLostLines(UserWarning):
    """Lines a test expected that the kubelet never served: listed in pytest's warnings
    summary, so a run that met the loss says how many."""


@dataclass(frozen=True)
class Rotated:
    """One rotated file's output: its whole lines, then the start of a line torn at the
    rotation (``torn``) and, when the next file was kept too, that line's rest."""

    lines: list[str]
    torn: str | None = None
    rest: str | None = None


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

    def files(self) -> list[Rotated]:
        """The kept files' output (the log's own text, CRI prefix removed), oldest first."""
        return joined([_cri_records(self._kept[name]) for name in sorted(self._kept)])

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


def kubelet_losses(expected: list[str], stored: list[str], rotated: list[Rotated]) -> int:
    """How many of ``expected`` the kubelet never served, after checking that everything
    else is Berth's to answer for: the stored lines are ``expected`` in order, each
    once; and each run of missing lines is the end of one rotated file whose first line
    was stored (the follow was reading that file and moved on before its end). When that
    file ends with a torn line, the run ends with the whole line and the follow's next
    stored line is exactly the line's rest (what the new file began with). A missing line
    anywhere else, a whole rotated file missing (a reader more than one rotation behind),
    a line out of order or twice, or any other line the job did not print fails with
    what was seen.
    """
    assert len(set(stored)) == len(stored), _doubled(stored)
    printed = set(expected)
    stored_set = set(stored)
    in_order = [line for line in expected if line in stored_set]
    assert [line for line in stored if line in printed] == in_order, "stored lines out of order"
    at = {line: i for i, line in enumerate(stored)}
    where = {line: (f, i) for f, file in enumerate(rotated) for i, line in enumerate(file.lines)}
    fragments: set[int] = set()  # where in ``stored`` a torn line's rest was served alone
    lost = 0
    for before, run in _missing_runs(expected, stored_set):
        file, tail = _losing_file(rotated, where, run, before)
        assert file.lines[0] in stored_set, f"a whole rotated file missing, from {file.lines[0]!r}"
        if file.torn is None:
            assert tail == run, _not_the_rest(run, tail)
        else:
            whole = run[-1]
            rest = whole[len(file.torn) :]
            assert tail == run[:-1] and whole.startswith(file.torn) and rest, _not_the_rest(
                run, [*tail, f"{file.torn}... (torn)"]
            )
            assert file.rest in (None, rest), f"{whole!r} torn as {file.torn!r} + {file.rest!r}"
            served = at[before] + 1 if before is not None else 0
            assert stored[served : served + 1] == [rest], (
                f"{whole!r} torn at a rotation: its rest {rest!r} not served after"
                f" {before!r} (served: {stored[served : served + 1]})"
            )
            fragments.add(served)
        lost += len(run)
    others = [line for i, line in enumerate(stored) if line not in printed and i not in fragments]
    assert not others, f"{len(others)} stored lines not printed by the job: {others[:3]}"
    return lost


def joined(files: list[list[tuple[bool, str]]]) -> list[Rotated]:
    """Consecutive rotated files' CRI records (partial or not, text) as their output: a
    partial record's text runs on into the next record, in the same file or the next."""
    out: list[Rotated] = []
    carried: str | None = None  # the previous file's torn line
    for records in files:
        lines: list[str] = []
        partial = ""
        for i, (is_partial, text) in enumerate(records):
            if i == 0 and carried is not None:
                # Never seen: fail loudly rather than guess how such a line was served.
                assert not is_partial, f"a torn line runs on past a whole file: {carried!r}"
                out[-1] = Rotated(out[-1].lines, carried, text)
                continue
            if is_partial:
                partial += text
            else:
                lines.append(partial + text)
                partial = ""
        torn = partial if records and records[-1][0] else None
        out.append(Rotated(lines, torn))
        carried = torn
    return out


def _losing_file(
    rotated: list[Rotated],
    where: dict[str, tuple[int, int]],
    run: list[str],
    before: str | None,
) -> tuple[Rotated, list[str]]:
    """The rotated file whose end ``run`` is, and its lines from ``run``'s start: found by
    ``run``'s first line (``where``: each kept line's file and place), or, when that is a
    torn line, by the line ``before`` it, the last whole line of a torn file."""
    if run[0] in where:
        f, i = where[run[0]]
        return rotated[f], rotated[f].lines[i:]
    if before in where:
        f, i = where[before]
        if rotated[f].torn is not None and i == len(rotated[f].lines) - 1:
            return rotated[f], []
    raise AssertionError(
        f"{len(run)} lines missing ({run[0]!r} .. {run[-1]!r}), not in any of"
        f" the {len(rotated)} rotated files kept"
    )


def _not_the_rest(run: list[str], tail: list[str]) -> str:
    return (
        f"{len(run)} lines missing ({run[0]!r} .. {run[-1]!r}), not the whole rest of"
        f" their rotated file ({len(tail)} lines from there to its end)"
    )


def _missing_runs(expected: list[str], stored: set[str]) -> list[tuple[str | None, list[str]]]:
    """Each run of ``expected`` lines not stored, with the stored line before it."""
    runs: list[tuple[str | None, list[str]]] = []
    before: str | None = None
    current: list[str] = []
    for line in expected:
        if line in stored:
            if current:
                runs.append((before, current))
                current = []
            before = line
        else:
            current.append(line)
    if current:
        runs.append((before, current))
    return runs


def _cri_records(path: Path) -> list[tuple[bool, str]]:
    """Each CRI log record (``<time> <stream> <P|F>[:...] <text>``) as (partial, text)."""
    raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    records = []
    for line in raw.decode().splitlines():
        fields = line.split(" ", 3)
        if len(fields) == 4:
            records.append((fields[2].split(":")[0] == "P", fields[3]))
    return records


def _doubled(stored: list[str]) -> str:
    twice = [line for line, n in Counter(stored).items() if n > 1]
    return f"{len(twice)} lines stored twice: {twice[:3]}"
