"""The shell that is every run container's PID 1: it counts the output and supervises the commands.

**Counting.** The kubelet's log API can lose lines: its follow moves to the new file at
a rotation before the old one's last lines are read, and a reader that fell more than
one file behind (a collector down for a while) can never read the rotated files at all.
Only the container knows how much it printed, so PID 1 sends its own and its commands'
stdout and stderr, merged in the order written, through ``tee`` (to the container's
stdout) and ``wc -lc``, and once the commands are done writes the line count to the
termination message (``berth-output-lines N``). The collector compares that with the
lines it stored and tells the reader how many are missing (:func:`printed_lines`).
Counting is best effort: an image without ``tee``, ``wc``, ``mkfifo`` or a writable temp
directory runs as before, uncounted; so does a run whose background processes still
hold the output open after PID 1 sent them TERM at its end (``tee`` making no progress
for ``REPORT_IDLE_S``, or ``REPORT_MAX_S`` in all). The report is PID 1's EXIT trap, so
it runs however PID 1 ends, and PID 1 does not exit while ``tee`` still passes on
output (as PID 1, anything still in the pipe would die with it).
The counters ignore SIGTERM, so a stop still counts the commands' last words.

**The copy and the hold.** A count says how many lines were lost; a copy gives them
back. The kubelet's follow loses the end of a file at a rotation, only the container
has every byte, and a container that has exited cannot be read. So with ``Keeping.copy_bytes``
``tee`` also feeds a keeper that stores the output's first ``copy_bytes`` bytes in
``kept`` (and drains the rest: ``tee`` never waits on it), and with ``Keeping.hold_s`` PID 1,
once the count is written, prints ``berth-output-end UID N B DIR`` on the container's
stdout, after everything ``tee`` passed on (:func:`output_end`), and waits up to
``hold_s`` seconds while ``DIR/hold`` exists. The collector reads ``kept`` through
``exec``, stores what it lacked, then removes ``hold`` (:func:`read_kept_command`,
:func:`release_command`). A stop (TERM), before or during the hold, ends it.
PID 1 holds only for a run whose log file (each line with the kubelet's prefix) reaches
``rotate_bytes``, so could have met a rotation. Bounded (``copy_bytes`` on disk,
``hold_s`` at the end) and best effort: an image without ``head`` or ``cat``, no pod
uid (``BERTH_POD_UID``, from the downward API) or more output than ``copy_bytes`` (an
incomplete copy) and the container ends as before, counted.

**Supervision.** A shell that is PID 1 ignores SIGTERM unless it traps it, and it runs
a trap only once its foreground command ends: with the commands run directly, the
kubelet's SIGTERM reached nobody, every stop took the full grace period (30 s by
default) and the commands never got to shut down cleanly. Here PID 1 waits on them in
the background (``wait`` returns at once on a trapped signal), passes TERM to every
other process of the container, waits again for the commands to finish, and exits with
their status.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

TERMINATION_LOG = "/dev/termination-log"
"""Where the kubelet takes a container's termination message from (its default path)."""
REPORT_IDLE_S = 5
"""How long PID 1, on its way out, waits for the counters while ``tee`` makes no progress:
a background process still holding the output keeps them from ever ending (the run is
then left uncounted), and a stalled reader of the container's stdout keeps ``tee`` from
passing on the last lines (lost if PID 1 gave up sooner: they die with the container)."""
REPORT_MAX_S = 30
"""The longest PID 1 waits for the counters in all (a reader that keeps reading slowly)."""
_PRINTED = re.compile(r"^berth-output-lines (\d+)$", re.MULTILINE)


@dataclass(frozen=True)
class Keeping:
    """How PID 1 keeps the output for the collector: a copy of its first ``copy_bytes``,
    and, when its lines made ``rotate_bytes`` of log file (the nodes' rotation size), a
    hold of ``hold_s`` at most at its end for the collector to read it. Zeros: neither."""

    copy_bytes: int = 0
    rotate_bytes: int = 0
    hold_s: int = 0

    @property
    def holds(self) -> bool:
        """Whether the container can hold on at its end (it then prints an end line
        naming its pod's uid)."""
        return self.copy_bytes > 0 and self.hold_s > 0


def script(
    preamble: list[str],
    body: list[str],
    *,
    termination_log: str = TERMINATION_LOG,
    keeping: Keeping = Keeping(),
) -> str:
    """The whole container script: ``preamble`` (Berth's own setup: sshd, peers, dockerd)
    and the user's ``body``, both counted; the body supervised; the output kept as
    ``keeping`` says."""
    hold = _hold_lines(keeping) if keeping.holds else []
    lines = ["set -e", *hold, *_report_lines(termination_log, hold=bool(hold))]
    lines += [*_counting_lines(keeping.copy_bytes), *preamble]
    return "\n".join([*lines, *_supervised(body), 'exit "$berth_rc"'])


def printed_lines(message: str | None) -> int | None:
    """How many lines the container printed, from its termination message; None if it
    did not say (uncounted, killed, or not a Berth container)."""
    found = _PRINTED.findall(message or "")
    return int(found[-1]) if found else None


END_MARKER = "berth-output-end"
"""The first word of the line PID 1 prints on the container's stdout when it holds."""
REPEAT_S = 2
"""While it holds, PID 1 prints its end line again this often."""
_STAMP = rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z "
# The end line is the last thing on its line, after a last line without a newline if
# there was one (glued to it, with no timestamp of its own from the kubelet, or one).
_END = re.compile(
    rb"(?P<prefix>.*?)(?:"
    + _STAMP
    + rb")?"
    + re.escape(END_MARKER.encode())
    + rb" (?P<uid>\S+) (?P<lines>\d{1,15}) (?P<bytes>\d{1,15}) (?P<dir>/[!-~]*)"
    + rb"(?P<again> again)?\n?",
    re.DOTALL,
)


@dataclass(frozen=True)
class OutputEnd:
    """What the end line says: the container's count and where its copy is."""

    lines: int
    bytes: int
    directory: str
    again: bool = field(default=False, compare=False)
    """A repeat, said while PID 1 holds on: the first may not have been served."""


def output_end(line: bytes, uid: str) -> tuple[bytes, OutputEnd] | None:
    """``line`` is one raw line from the log API with timestamps=true (e.g.
    b"2026-12-07T21:00:00.123456789Z berth-output-end <uid> 12 345 /tmp/.berth-output.AbC123\\n",
    with " again" before the newline on a repeat).
    If it is this pod's end line, return (prefix, end): ``prefix`` is the output's last
    line when it had no newline, which the end line was printed after on the same stream
    (with its timestamp, e.g. b"2026-...Z abc"), b"" normally. None otherwise (another
    uid, a line not ending with the end line, malformed numbers)."""
    # Called on every line: the regex only runs on the rare line that has both words.
    marker = f"{END_MARKER} {uid} ".encode()
    if not uid or marker not in line:
        return None
    found = _END.fullmatch(line)
    if found is None or found["uid"] != uid.encode():
        return None
    end = OutputEnd(
        int(found["lines"]),
        int(found["bytes"]),
        found["dir"].decode("ascii"),
        again=found["again"] is not None,
    )
    return found["prefix"], end


def read_kept_command(directory: str) -> list[str]:
    """The ``exec`` command that prints the container's copy (PID 1 still holds on)."""
    return ["/bin/sh", "-c", 'cat "$1/kept"', "sh", directory]


def release_command(directory: str) -> list[str]:
    """The ``exec`` command that lets PID 1 end without reading the copy."""
    return ["/bin/sh", "-c", 'rm -f "$1/hold"', "sh", directory]


def _counting_lines(keep_bytes: int) -> list[str]:
    # One FIFO for both streams: with a counter per stream, lines written to stdout
    # then stderr came out of the two ``tee``s in either order (seen: a stderr line
    # before the 100 stdout lines printed ahead of it); one pipe keeps the order they
    # were written in. tee copies it to the container's stdout and to a second FIFO
    # that wc reads (lines, then bytes: GNU and busybox both print them in that order).
    # PID 1 keeps the container's streams on fds 8 and 9 to put back when it exits
    # (the counter sees the end of output only once every writer, PID 1 included, has
    # closed its end). A failed check returns before anything starts: the run goes on
    # uncounted. ``exec`` cannot fail here (the FIFOs are ours, and
    # their readers were started first). The report is an EXIT trap, so every way out
    # passes through it: the end, a ``set -e`` failure or an ``exit 1`` in Berth's
    # setup, a syntax error in the commands (the shell stops parsing them); PID 1 gone
    # before tee, whatever tee had not passed on yet would die with it.
    return [
        "berth_counts=",
        "berth_count() {",
        "  for berth_t in tee wc mkfifo mktemp; do",
        "    command -v $berth_t >/dev/null || return 1; done",
        '  berth_d=$(mktemp -d "${TMPDIR:-/tmp}/.berth-output.XXXXXX" 2>/dev/null) || return 1',
        '  mkfifo "$berth_d/out" "$berth_d/copy" 2>/dev/null || return 1',
        # Born ignoring TERM (and INT): set in a subshell, a stop or the end's
        # ``kill -TERM -1`` could come first (seen under load: a run that failed at once
        # lost wc, then all its output, with tee waiting for a reader forever).
        "  trap '' TERM INT; berth_keeps=",
        '  (exec wc -lc < "$berth_d/copy" > "$berth_d/lines") &',
        *(_keeper_lines(keep_bytes) if keep_bytes > 0 else []),
        '  (exec tee "$berth_d/copy" ${berth_keeps:+"$berth_keeps"} < "$berth_d/out") &',
        "  berth_tee=$!",
        "  trap - TERM INT",
        '  exec 8>&1 9>&2 >"$berth_d/out" 2>&1',
        "  berth_counts=$berth_d",
        "  trap berth_report EXIT",
        "}",
        # Never a redirection on this call: the shell would put the redirected fds back
        # after the call, undoing the function's exec.
        "berth_count || true",
    ]


def _keeper_lines(keep_bytes: int) -> list[str]:
    # A third FIFO for the copy: ``head`` stores its first bytes, then ``cat`` drains
    # the rest, so tee never waits on it nor gets EPIPE (its SIGPIPE would end the
    # output). Forked while TERM is ignored, like the counter. ``head -c`` is not POSIX,
    # but GNU, busybox and BSD all have it.
    return [
        "  berth_keeper=",
        "  if command -v head >/dev/null && command -v cat >/dev/null &&",
        '    mkfifo "$berth_d/keep" 2>/dev/null; then',
        "    berth_keeps=$berth_d/keep",
        f'    (head -c {keep_bytes} > "$berth_d/kept" || :; exec cat > /dev/null)'
        ' < "$berth_keeps" &',
        "    berth_keeper=$!",
        "  fi",
    ]


def _supervised(body: list[str]) -> list[str]:
    return [
        # As PID 1 (a container's own PID namespace), -1 is every process in the
        # container but itself; anywhere else, only the commands' shell. ``-TERM -1``
        # is the one spelling dash, bash and busybox all take (dash reads the -1 of
        # ``-s TERM -1`` as an option; busybox refused ``-s TERM -- -1``, so an Alpine
        # image's stop reached nobody and took the whole grace period).
        "berth_stopped=",
        "berth_term() { berth_stopping=1; berth_stopped=1; trap '' TERM INT; if [ \"$$\" = 1 ];"
        ' then kill -TERM -1; else kill -TERM "$berth_pid"; fi 2>/dev/null; true; }',
        "berth_stopping=",
        "trap berth_term TERM INT",
        "{",
        *body,
        # The commands do not inherit the container's own streams (PID 1's fds 8 and 9).
        "} 8>&- 9>&- &",
        "berth_pid=$!",
        "berth_rc=0",
        'wait "$berth_pid" || berth_rc=$?',
        # Cut short by the trap (its status 128 + TERM, not theirs): wait for the
        # commands to wind down. A second wait of the same pid returns its status even
        # once reaped (dash and bash both keep it), so a TERM just after they ended is
        # harmless; the trap ignores any later signal, so this waits once more at most.
        'while [ -n "$berth_stopping" ]; do',
        '  berth_stopping=; berth_rc=0; wait "$berth_pid" || berth_rc=$?; done',
    ]


def _report_lines(termination_log: str, *, hold: bool) -> list[str]:
    # ``set +e``: a failed write must not change the exit status. As PID 1, it first
    # sends TERM to whatever the commands left running (tee and wc ignore it): such a
    # process holds the output open, and one still printing kept PID 1 waiting for
    # good; the container would end it with SIGKILL once PID 1 exits anyway. Progress
    # is tee's written bytes (/proc/PID/io wchar, read by the shell itself: no process
    # started while waiting); where that file cannot be read, the wait is
    # REPORT_IDLE_S in all, and REPORT_MAX_S at most whatever happens. ``read``, not
    # ``cat``: an image without cat got a count of 0.
    idle, most = REPORT_IDLE_S * 10, REPORT_MAX_S * 10
    return [
        "berth_report() {",
        "  berth_status=$?; set +e",
        "  exec 1>&8 2>&9 8>&- 9>&-",
        # A stop from here on is remembered (the hold then does not begin), not obeyed.
        "  if [ \"$$\" = 1 ]; then trap 'berth_stopped=1' TERM INT; kill -TERM -1 2>/dev/null; fi",
        "  berth_idle=0; berth_seen=; berth_waited=0",
        '  until [ -s "$berth_counts/lines" ]; do',
        "    berth_now=",
        '    while read -r berth_k berth_v; do [ "$berth_k" = wchar: ] && berth_now=$berth_v;'
        ' done 2>/dev/null < "/proc/$berth_tee/io"',
        '    if [ -n "$berth_now" ] && [ "$berth_now" != "$berth_seen" ]; then',
        "      berth_idle=0; berth_seen=$berth_now",
        f'    else berth_idle=$((berth_idle+1)); [ "$berth_idle" -le {idle} ] || break; fi',
        f'    berth_waited=$((berth_waited+1)); [ "$berth_waited" -le {most} ] || break',
        "    sleep 0.1 2>/dev/null ||"
        " { sleep 1; berth_idle=$((berth_idle+9)); berth_waited=$((berth_waited+9)); }",
        "  done",
        # A count that is not all digits is not written (nor risked in arithmetic: an
        # error there would end PID 1 with another status).
        '  if [ -s "$berth_counts/lines" ] &&'
        ' read -r berth_n berth_b < "$berth_counts/lines"; then',
        "    case $berth_n in",
        "      ''|*[!0-9]*) ;;",
        f"      *) echo \"berth-output-lines $berth_n\" 2>/dev/null >> '{termination_log}'"
        f"{'; berth_hold' if hold else ''} ;;",
        "    esac",
        '    rm -rf "$berth_counts" 2>/dev/null',
        "  fi",
        '  exit "$berth_status"',
        "}",
    ]


def _hold_lines(keeping: Keeping) -> list[str]:
    tenths = keeping.hold_s * 10
    # Run by the report once the count is written. The report ignores TERM and INT (as
    # PID 1); here either ends the hold at once: a stop must not wait for the collector.
    # N <= B (every line counted ends in a newline), so with B <= KEEP checked first the
    # arithmetic cannot overflow (an error there would end PID 1 with another status).
    # Each line in the kubelet's log file gets a prefix like
    # "2026-12-07T21:00:00.123456789Z stdout F " (40 bytes at most; 41 errs towards a
    # hold): a run whose lines make less than ``rotate_bytes`` of file met no rotation.
    # The keeper ends right after tee, whose end the count saw; waiting for it makes
    # ``kept`` whole. The end line carries the directory as one word (no blanks).
    return [
        # Kept from the commands: the end line is PID 1's to print.
        "berth_uid=${BERTH_POD_UID:-}; unset BERTH_POD_UID",
        # printf: echo would take a backslash in the directory (TMPDIR) for an escape.
        # $1: " again" on a repeat.
        f"berth_end() {{ printf '{END_MARKER} %s %s %s %s%s\\n'"
        ' "$berth_uid" "$berth_n" "$berth_b" "$berth_counts" "${1:-}"; }',
        "berth_hold() {",
        # A stop ends the hold before it begins too (TERM while the commands ran).
        '  [ -z "$berth_stopped" ] || return 0',
        '  [ -n "$berth_keeper" ] && [ -n "$berth_uid" ] || return 0',
        "  case $berth_b in ''|*[!0-9]*) return 0 ;; esac",
        "  case $berth_uid$berth_counts in *[[:space:]]*) return 0 ;; esac",
        "  case $berth_counts in /*) ;; *) return 0 ;; esac",
        "  case $berth_counts in *[!!-~]*) return 0 ;; esac",
        f'  [ "$berth_b" -le {keeping.copy_bytes} ] || return 0',
        f"  [ $((berth_b + 41 * berth_n)) -ge {keeping.rotate_bytes} ] || return 0",
        '  wait "$berth_keeper"',
        # Not ``:``: a failed redirection on a special built-in would end the shell.
        '  true 2>/dev/null > "$berth_counts/hold" || return 0',
        "  trap 'rm -f \"$berth_counts/hold\"' TERM INT",
        # On stdout, after everything tee passed on: the runtime copies stdout and
        # stderr separately, so on stderr it could come before the output's last lines.
        "  berth_end",
        "  berth_held=0",
        f'  while [ -e "$berth_counts/hold" ] && [ "$berth_held" -lt {tenths} ]; do',
        "    berth_held=$((berth_held+1))",
        "    sleep 0.1 2>/dev/null || { sleep 1; berth_held=$((berth_held+9)); }",
        # Again every REPEAT_S: the kubelet serves only its newest file, and a rotation
        # while PID 1 holds on can take the line (and the output's end) out of it.
        f'    [ $((berth_held % {REPEAT_S * 10})) -ne 0 ] || [ ! -e "$berth_counts/hold" ] ||'
        " berth_end ' again'",
        "  done",
        "}",
    ]
