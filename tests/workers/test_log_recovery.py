"""Laying the stored lines over the container's copy (workers/collector/recovery.py)."""

from __future__ import annotations

from shared.runlogs.store import Entry
from workers.collector.recovery import cut_marker, merge

TS = [f"2026-12-07T21:00:{i:02d}.5Z ".encode() for i in range(60)]
END = b"2026-12-07T21:01:00Z "


def _entries(*groups: list[tuple[int, str]]) -> list[Entry]:
    """Entries 1-0, 2-0, ...: each a list of (timestamp index, line)."""
    return [
        Entry(id=f"{n + 1}-0", data=b"".join(TS[i] + t.encode() + b"\n" for i, t in group))
        for n, group in enumerate(groups)
    ]


def _copy(*lines: str, newline: bool = True) -> bytes:
    return "\n".join(lines).encode() + (b"\n" if newline else b"")


def test_nothing_missing_recovers_nothing_and_keeps_every_entry_as_it_was() -> None:
    entries = _entries([(0, "a"), (1, "b")], [(2, "c")])
    merged = merge(entries, _copy("a", "b", "c"), max_line=1024, fallback_ts=END)
    assert merged is not None
    assert merged.recovered == 0
    assert merged.entries == [(e.id, e.data, e.data.count(b"\n")) for e in entries]


def test_missing_lines_join_the_entry_of_the_stored_line_after_them_under_its_time() -> None:
    entries = _entries([(0, "a"), (3, "d")], [(5, "f")])
    merged = merge(
        entries, _copy("a", "b", "c", "d", "e", "f", "g"), max_line=1024, fallback_ts=END
    )
    assert merged is not None
    assert merged.recovered == 4
    assert merged.entries == [
        ("1-0", TS[0] + b"a\n" + TS[3] + b"b\n" + TS[3] + b"c\n" + TS[3] + b"d\n", 4),
        # After the last stored line: the end line's time.
        ("2-0", TS[5] + b"e\n" + TS[5] + b"f\n" + END + b"g\n", 3),
    ]


def test_a_missing_start_and_repeated_lines_keep_the_copys_order() -> None:
    entries = _entries([(1, "x"), (2, "x")])
    merged = merge(entries, _copy("x", "x", "x", "y"), max_line=1024, fallback_ts=END)
    assert merged is not None
    assert merged.recovered == 2
    [(_, data, n)] = merged.entries
    assert n == 4
    assert [line.split(b" ", 1)[1] for line in data.splitlines()] == [b"x", b"x", b"x", b"y"]


def test_a_last_line_without_a_newline_matches_the_one_the_collector_ended() -> None:
    entries = _entries([(0, "a"), (1, "tail")])
    merged = merge(
        entries,
        _copy("a", "b", "tail", newline=False),
        max_line=1024,
        fallback_ts=END,
        tail_stored=True,
    )
    assert merged is not None
    assert merged.recovered == 1
    assert merged.entries[0][1].endswith(TS[1] + b"tail\n")


def test_a_stored_cut_line_matches_the_long_line_and_a_recovered_long_line_is_cut() -> None:
    limit = 64
    marker = cut_marker(limit)
    long_a, long_b = "A" * 200, "B" * 200
    cut_a = (TS[0] + long_a.encode())[:limit] + marker
    entries = [Entry(id="1-0", data=cut_a + TS[2] + b"c\n")]
    merged = merge(entries, _copy(long_a, long_b, "c"), max_line=limit, fallback_ts=END)
    assert merged is not None
    assert merged.recovered == 1
    assert merged.entries == [
        ("1-0", cut_a + (TS[2] + long_b.encode())[:limit] + marker + TS[2] + b"c\n", 3)
    ]


def test_a_stored_line_the_copy_lacks_leaves_the_store_as_it_is() -> None:
    entries = _entries([(0, "a"), (1, "not in the copy")])
    assert merge(entries, _copy("a", "b"), max_line=1024, fallback_ts=END) is None
    out_of_order = _entries([(0, "b"), (1, "a")])
    assert merge(out_of_order, _copy("a", "b"), max_line=1024, fallback_ts=END) is None


def test_with_nothing_stored_the_whole_copy_is_one_new_entry() -> None:
    merged = merge([], _copy("a", "b"), max_line=1024, fallback_ts=END)
    assert merged is not None
    assert merged.entries == [("*", END + b"a\n" + END + b"b\n", 2)]
    assert merged.recovered == 2


def test_a_line_torn_by_a_rotation_is_stored_whole_in_place_of_its_rest() -> None:
    """The follow lost the old file's end with the start of "line 3" and stored its rest
    ("e 3", from the new file) as a line: the copy's whole line takes its place."""
    entries = _entries([(0, "line 1")], [(4, "e 3"), (4, "line 4")])
    merged = merge(
        entries, _copy("line 1", "line 2", "line 3", "line 4"), max_line=1024, fallback_ts=END
    )
    assert merged is not None
    assert merged.recovered == 1
    assert merged.entries[1] == (
        "2-0",
        TS[4] + b"line 2\n" + TS[4] + b"line 3\n" + TS[4] + b"line 4\n",
        3,
    )


def test_a_last_line_without_a_newline_never_served_is_recovered_and_counted_unended() -> None:
    """The end line is printed right after the output's unended last line: when the
    kubelet served the end line alone (a repeat of it, the first one rotated away with
    the last line), the last line never came and is put back, ended here."""
    entries = _entries([(0, "a")])
    merged = merge(entries, _copy("a", "b", "tail", newline=False), max_line=1024, fallback_ts=END)
    assert merged is not None
    assert (merged.recovered, merged.unended) == (2, 1)
    assert merged.entries == [("1-0", TS[0] + b"a\n" + END + b"b\n" + END + b"tail\n", 3)]


def test_a_last_line_never_served_is_not_taken_for_an_equal_stored_line() -> None:
    entries = _entries([(0, "x")])
    merged = merge(entries, _copy("x", "y", "x", newline=False), max_line=1024, fallback_ts=END)
    assert merged is not None
    assert merged.entries == [("1-0", TS[0] + b"x\n" + END + b"y\n" + END + b"x\n", 3)]
    assert merged.unended == 1


def test_a_line_ending_in_cr_lf_matches_the_line_the_runtime_stored_without_them() -> None:
    entries = _entries([(0, "a"), (2, "c")])
    merged = merge(entries, b"a\r\nb\r\nc\r\n", max_line=1024, fallback_ts=END)
    assert merged is not None
    assert merged.entries == [("1-0", TS[0] + b"a\n" + TS[2] + b"b\n" + TS[2] + b"c\n", 3)]


def test_a_stored_line_equal_to_a_later_copy_line_is_that_line_not_a_torn_rest() -> None:
    """Indented JSON: "}" ends "  }" too, but the copy has a "}" of its own further on."""
    entries = _entries([(0, "{"), (4, "}")])
    kept = _copy("{", '  "a": {', '    "b": 1', "  }", "}")
    merged = merge(entries, kept, max_line=1024, fallback_ts=END)
    assert merged is not None
    [(_, data, n)] = merged.entries
    assert data.endswith(TS[4] + b"  }\n" + TS[4] + b"}\n")
    assert (n, merged.recovered) == (5, 3)


def test_the_stored_last_line_without_a_newline_is_the_copys_last_even_when_repeated() -> None:
    entries = _entries([(5, "x")])
    kept = _copy("x", "y", "x", newline=False)
    merged = merge(entries, kept, max_line=1024, fallback_ts=END, tail_stored=True)
    assert merged is not None
    assert merged.entries == [("1-0", TS[5] + b"x\n" + TS[5] + b"y\n" + TS[5] + b"x\n", 3)]
    # ...with a CR of its own: the runtime keeps one that no newline follows.
    entries = _entries([(0, "a"), (1, "abc\r")])
    merged = merge(entries, b"a\nb\nabc\r", max_line=1024, fallback_ts=END, tail_stored=True)
    assert merged is not None and merged.recovered == 1


def test_a_torn_rest_that_is_also_a_later_line_is_placed_where_the_next_line_confirms() -> None:
    entries = _entries([(0, "b"), (1, "c")])  # "b": the rest of "ab", torn by a rotation
    merged = merge(entries, _copy("ab", "c", "b"), max_line=1024, fallback_ts=END)
    assert merged is not None
    assert merged.entries == [("1-0", TS[0] + b"ab\n" + TS[1] + b"c\n" + END + b"b\n", 3)]


def test_lines_stored_with_their_cr_as_cri_o_stores_them_match_the_copy() -> None:
    entries = _entries([(0, "a\r"), (2, "c\r")])
    merged = merge(entries, b"a\r\nb\r\nc\r\n", max_line=1024, fallback_ts=END)
    assert merged is not None
    assert merged.entries == [("1-0", TS[0] + b"a\r\n" + TS[2] + b"b\n" + TS[2] + b"c\r\n", 3)]


def test_a_last_line_without_a_newline_stored_cut_is_the_copys_long_last_line() -> None:
    """The output's last line, longer than ``max_line`` and with no newline, was stored
    cut (its end line came glued to its rest): it is the copy's last, not a line the
    copy lacks."""
    limit = 64
    marker = cut_marker(limit)
    long_tail = "T" * 200
    cut = (TS[3] + long_tail.encode())[:limit] + marker
    entries = [Entry(id="1-0", data=TS[0] + b"a\n"), Entry(id="2-0", data=cut)]
    kept = _copy("a", "b", long_tail, newline=False)
    merged = merge(entries, kept, max_line=limit, fallback_ts=END, tail_stored=True)
    assert merged is not None
    assert merged.recovered == 1
    assert merged.entries == [("1-0", TS[0] + b"a\n", 1), ("2-0", TS[3] + b"b\n" + cut, 2)]


def test_a_last_line_without_a_newline_torn_by_a_rotation_is_stored_whole() -> None:
    """The kubelet served only the end of the output's last line (its start was in a
    rotated file): the copy's whole line takes the rest's place, cut as the collector
    cuts, under the rest's time."""
    entries = _entries([(0, "a"), (3, "of the last line")])
    kept = _copy("a", "b", "the start of the last line", newline=False)
    merged = merge(entries, kept, max_line=1024, fallback_ts=END, tail_stored=True)
    assert merged is not None
    assert merged.recovered == 1
    assert merged.entries == [
        ("1-0", TS[0] + b"a\n" + TS[3] + b"b\n" + TS[3] + b"the start of the last line\n", 3)
    ]
    limit = 40
    marker = cut_marker(limit)
    merged = merge(entries, kept, max_line=limit, fallback_ts=END, tail_stored=True)
    assert merged is not None
    assert merged.entries[0][1].endswith((TS[3] + b"the start of the last line")[:limit] + marker)


def test_a_stored_last_line_that_is_no_part_of_the_copys_last_leaves_the_store_as_it_is() -> None:
    entries = _entries([(0, "a"), (1, "something else")])
    kept = _copy("a", "b", "the last line", newline=False)
    assert merge(entries, kept, max_line=1024, fallback_ts=END, tail_stored=True) is None
