"""pylos.runtime.channel: the launcher's SEQPACKET channels, with real descriptors."""

from __future__ import annotations

import os

from pylos.runtime.channel import pair, recv_fds, send_fds


def test_a_message_and_its_descriptors_arrive_together():
    one, other = pair()
    read_end, write_end = os.pipe()
    try:
        assert not os.get_inheritable(one.fileno())  # close-on-exec, as socket's are
        send_fds(one, b"hello", [write_end, read_end])
        message, fds = recv_fds(other, 64, 4)
        assert message == b"hello" and len(fds) == 2
        os.write(fds[0], b"through the passed descriptor")
        assert os.read(read_end, 100) == b"through the passed descriptor"
        for fd in fds:
            os.close(fd)
        send_fds(one, b"no descriptors", [])
        assert recv_fds(other, 64, 1) == (b"no descriptors", [])
    finally:
        for fd in (read_end, write_end):
            os.close(fd)
        one.close()


def test_a_closed_end_reads_as_empty():
    one, other = pair()
    one.close()
    try:
        assert recv_fds(other, 64, 1) == (b"", [])
    finally:
        other.close()
