"""Counting SSH sessions from a pod's /proc/net/tcp, as workers/activity.py does."""

from __future__ import annotations

from workers.activity import count_sessions

# Three sockets on the sshd port (10022 = 0x2726): two established, one listening;
# and an established connection on another port.
PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:2726 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0400F40A:2726 0100F40A:B1C2 01 00000000:00000000 02:000A7B2F 00000000     0        0 2 1
   2: 0400F40A:2726 0100F40A:B1C8 01 00000000:00000000 02:000A7B2F 00000000     0        0 3 1
   3: 0400F40A:1F40 0100F40A:C000 01 00000000:00000000 00:00000000 00000000     0        0 4 1
"""
PROC_NET_TCP6 = """\
  sl  local_address                         remote_address                        st
   0: 0000000000000000FFFF00000400F40A:2726 0000000000000000FFFF00000100F40A:D000 01
"""


def test_established_connections_to_the_sshd_port_are_counted_in_both_families() -> None:
    assert count_sessions(PROC_NET_TCP + PROC_NET_TCP6, 10022) == 3


def test_a_listening_socket_or_another_port_is_no_session() -> None:
    assert (
        count_sessions(PROC_NET_TCP.splitlines()[0] + "\n" + PROC_NET_TCP.splitlines()[1], 10022)
        == 0
    )
    assert count_sessions(PROC_NET_TCP, 8000) == 1


def test_garbage_is_ignored_not_a_crash() -> None:
    assert count_sessions("not\n a : table\n\x00\x01", 10022) == 0
