"""The real-node log test's judge of a shortfall (tests/realnode/rotation.py): lines the
kubelet never served are told apart from lines Berth lost. Pure: no node needed."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import pytest

from tests.polling import wait_until
from tests.realnode.rotation import (
    KubeletLostLines,
    Rotated,
    RotatedFiles,
    joined,
    kubelet_losses,
)

LINES = [f"line {i:02d}" for i in range(30)]
# Three files as the kubelet rotated them: 00-09, 10-19 (both rotated), 20-29 (current).
ROTATED = [Rotated(LINES[0:10]), Rotated(LINES[10:20])]
# The same, with "line 19" torn at the second rotation: "line 1" ends the rotated file.
TORN = [Rotated(LINES[0:10]), Rotated(LINES[10:19], torn="line 1")]


def test_the_end_of_a_rotated_file_the_follow_moved_on_from_is_the_kubelets_loss() -> None:
    stored = LINES[:7] + LINES[10:16] + LINES[20:]
    assert kubelet_losses(LINES, stored, ROTATED) == 3 + 4


def test_everything_stored_is_no_loss() -> None:
    assert kubelet_losses(LINES, list(LINES), ROTATED) == 0


@pytest.mark.parametrize(
    ("stored", "why"),
    [
        (LINES[:4] + LINES[6:], "not the whole rest"),  # a gap inside a file
        (LINES[:25], "not in any of"),  # the current file's end
        (LINES[:10] + LINES[20:], "a whole rotated file missing"),  # a reader too far behind
        (LINES[:12] + LINES[11:], "stored twice"),
        ([*LINES[:3], LINES[4], LINES[3], *LINES[5:]], "out of order"),
    ],
)
def test_any_other_shortfall_is_berths(stored: list[str], why: str) -> None:
    with pytest.raises(AssertionError, match=why):
        kubelet_losses(LINES, stored, ROTATED)


def test_a_line_torn_at_a_rotation_served_as_its_rest_alone_is_the_kubelets_loss() -> None:
    # The follow moved on from the second file after "line 15": "line 16" .. "line 18"
    # and the torn line's start were never served; the new file's first record, "9", was.
    stored = [*LINES[:16], "9", *LINES[20:]]
    assert kubelet_losses(LINES, stored, TORN) == 4
    # Only the torn line lost: the follow read the file's whole lines, not its last record.
    assert kubelet_losses(LINES, [*LINES[:19], "9", *LINES[20:]], TORN) == 1
    # Known from the next file kept: its first record.
    told = [TORN[0], Rotated(LINES[10:19], torn="line 1", rest="9")]
    assert kubelet_losses(LINES, stored, told) == 4


def test_a_torn_line_served_whole_is_no_loss() -> None:
    assert kubelet_losses(LINES, list(LINES), TORN) == 0


@pytest.mark.parametrize(
    ("stored", "rotated", "why"),
    [
        ([*LINES[:16], *LINES[20:]], TORN, "its rest '9' not served after 'line 15'"),
        ([*LINES[:16], *LINES[20:21], "9", *LINES[21:]], TORN, "not served after"),
        ([*LINES[:16], "8", *LINES[20:]], TORN, "not served after"),
        ([*LINES[:16], "9", *LINES[21:]], TORN, "not the whole rest"),  # and "line 20"
        ([*LINES[:16], "9", *LINES[20:]], ROTATED, "not printed by the job"),  # not torn
        (
            [*LINES[:16], "9", *LINES[20:]],
            [TORN[0], Rotated(LINES[10:19], "line 1", "7")],
            "torn as",
        ),
        ([*LINES[:20], "9", *LINES[20:]], TORN, "not printed by the job"),  # nothing lost
    ],
)
def test_anything_else_around_a_torn_line_is_berths(
    stored: list[str], rotated: list[Rotated], why: str
) -> None:
    with pytest.raises(AssertionError, match=why):
        kubelet_losses(LINES, stored, rotated)


def test_partial_records_run_on_into_the_next_record_in_the_file_or_the_next_file() -> None:
    files = [
        [(False, "a"), (True, "b"), (True, "c"), (False, "d"), (True, "e")],
        [(False, "f"), (False, "g"), (True, "")],
        [(False, "h")],
        [(False, "i")],
    ]
    assert joined(files) == [
        Rotated(["a", "bcd"], torn="e", rest="f"),
        Rotated(["g"], torn="", rest="h"),
        Rotated([]),
        Rotated(["i"]),
    ]


def test_rotated_files_are_linked_as_they_appear_and_read_even_once_compressed(
    tmp_path: Path,
) -> None:
    root = tmp_path / "pod-logs"
    directory = root / "ns_pod-a_0123" / "main"
    directory.mkdir(parents=True)
    cri = "".join(f"2026-12-07T07:20:36.{i:09d}Z stdout F {line}\n" for i, line in enumerate(LINES))
    (directory / "0.log").write_text(cri)  # current: not kept
    (directory / "0.log.20261207-072036").write_text(cri[: len(cri) // 2])
    (directory / "0.log.20261207-072030.gz").write_bytes(gzip.compress(cri.encode()))
    (directory / "0.log.20261207-072040.gz.tmp").write_text("half a compression")
    keep = tmp_path / "keep"
    with RotatedFiles([root], "ns", lambda: "pod-a", keep) as rotated:
        wait_until(lambda: len(list(keep.iterdir())) == 2, timeout=10, what="two files kept")
        # Written after the link was made: the link is the file, so it is read too.
        with (directory / "0.log.20261207-072036").open("a") as f:
            f.write(cri[len(cri) // 2 :])
    assert rotated.found == directory
    assert rotated.files() == [Rotated(LINES), Rotated(LINES)]


def test_a_loss_by_the_kubelet_is_said_as_a_warning_not_raised() -> None:
    # pyproject's filters turn every other warning into an error; this one is shown.
    with warnings.catch_warnings(record=True) as seen:
        warnings.warn(
            "3 of 30 lines never served by the kubelet (...)", KubeletLostLines, stacklevel=1
        )
    assert [w.category for w in seen] == [KubeletLostLines]


def test_a_partial_record_ending_a_kept_file_is_read_as_a_torn_line(tmp_path: Path) -> None:
    root = tmp_path / "pod-logs"
    directory = root / "ns_pod-a_0123" / "main"
    directory.mkdir(parents=True)
    t = "2026-12-07T13:34:14.000000000Z"
    (directory / "0.log.20261207-133410").write_text(f"{t} stdout F line 18\n{t} stdout P line 1\n")
    (directory / "0.log.20261207-133414").write_text(f"{t} stdout F 9\n{t} stderr F:x line 20\n")
    keep = tmp_path / "keep"
    with RotatedFiles([root], "ns", lambda: "pod-a", keep) as rotated:
        wait_until(lambda: len(list(keep.iterdir())) == 2, timeout=10, what="two files kept")
    assert rotated.files() == [
        Rotated(["line 18"], torn="line 1", rest="9"),
        Rotated(["line 20"]),
    ]
