"""The launcher's channels between its own processes: SEQPACKET socket pairs that carry
messages and descriptors (SCM_RIGHTS).

Built on `_socket`, the C module under `socket`: `socket`'s Python layer (enum-typed
constants, selectors) costs each `pylos run` ~3 ms of start-up, and a channel needs none of
it. `send_fds`/`recv_fds` are what `socket`'s functions of those names do.
"""

from __future__ import annotations

import _socket
import array

Channel = _socket.socket
sethostname = _socket.sethostname


def pair() -> tuple[Channel, Channel]:
    """Two connected ends (close-on-exec, as every socket Python creates)."""
    return _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)


def send_fds(channel: Channel, message: bytes, fds: list[int]) -> None:
    """Send `message` with duplicates of `fds` in one datagram."""
    channel.sendmsg([message], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                                 array.array("i", fds))])


def recv_fds(channel: Channel, size: int, max_fds: int) -> tuple[bytes, list[int]]:
    """One datagram of at most `size` bytes and the descriptors that came with it (at most
    `max_fds`); (b"", []) when the other end has closed."""
    fds = array.array("i")
    message, ancillary, _, _ = channel.recvmsg(size, _socket.CMSG_LEN(max_fds * fds.itemsize))
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    return message, list(fds)
