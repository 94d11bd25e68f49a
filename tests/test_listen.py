"""Listening sockets and the rate-limited notice, as units."""

from __future__ import annotations

import logging
import socket

import pytest

from server.http.listen import ListenError, listen
from server.http.notice import Notice


def test_listening_sockets_say_tcp_so_asyncio_disables_nagle_on_accepted_ones():
    sockets = listen("127.0.0.1", 0)
    try:
        (server,) = sockets
        assert server.proto == socket.IPPROTO_TCP
        with socket.create_connection(server.getsockname()) as client:
            server.setblocking(True)
            accepted, _ = server.accept()
            with accepted:
                # asyncio sets TCP_NODELAY only when the accepted socket says IPPROTO_TCP;
                # without it every answer waits ~40 ms for a delayed ACK.
                assert accepted.proto == socket.IPPROTO_TCP
            assert client.fileno() >= 0
    finally:
        for sock in sockets:
            sock.close()


def test_a_port_in_use_is_one_line_naming_port_and_a_free_one():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError) as caught:
            listen("127.0.0.1", port)
    message = str(caught.value)
    assert message.startswith(f"PORT={port} is already in use on 127.0.0.1")
    assert "set e.g. PORT=" in message and "\n" not in message


def test_a_notice_says_once_per_interval_and_counts_the_rest(caplog):
    now = [0.0]
    notice = Notice(logging.getLogger("t"), "busy %s", interval=1.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        assert notice.say("a") is True
        for _ in range(1000):
            assert notice.say("b") is False
        now[0] = 1.5
        assert notice.say("c") is True
    assert [r.getMessage() for r in caplog.records] == [
        "busy a",
        "busy c (1000 more since the last such line)",
    ]
