#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A TCP relay that adds a fixed delay each way, for measuring against a distant upstream
(an IMAP server in another data centre, Microsoft 365 or Gmail from an office) where this
machine has no netem (tc's delay needs the sch_netem module).

    delay_relay.py --delay-ms 5 --to 127.0.0.1:143 [--to 127.0.0.1:993 ...]

listens on a free 127.0.0.1 port per --to and prints one line per target,
"relay <port> -> <host:port>", then "ready". Every chunk read is written to the other side
--delay-ms later, in order, in both directions, so a round trip costs twice the delay;
bytes are relayed as they are (TLS and STARTTLS pass through). Output waiting for its
time is not limited: meant for benchmarks on loopback, not for production.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys


async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    due: asyncio.Queue = asyncio.Queue()

    async def deliver() -> None:
        while True:
            item = await due.get()
            if item is None:
                break
            when, data = item
            wait = when - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    delivering = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(256 * 1024)
            if not data:
                break
            due.put_nowait((loop.time() + delay, data))
    except (ConnectionError, OSError):
        pass
    due.put_nowait(None)
    try:
        await delivering
    except (ConnectionError, OSError):
        pass


async def relay(client_reader, client_writer, target: tuple[str, int], delay: float) -> None:
    try:
        # The connect itself is a round trip away too.
        await asyncio.sleep(delay)
        server_reader, server_writer = await asyncio.open_connection(*target)
        await asyncio.sleep(delay)
    except OSError:
        client_writer.close()
        return
    for w in (client_writer, server_writer):
        w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await asyncio.gather(forward(client_reader, server_writer, delay),
                         forward(server_reader, client_writer, delay))
    for w in (client_writer, server_writer):
        w.close()


async def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--delay-ms", type=float, required=True, help="added each way (a round trip: twice)")
    p.add_argument("--to", action="append", required=True, help="host:port to relay to (repeatable)")
    a = p.parse_args(argv)
    delay = a.delay_ms / 1000
    servers = []
    for target in a.to:
        host, port = target.rsplit(":", 1)
        dest = (host, int(port))
        server = await asyncio.start_server(
            lambda r, w, dest=dest: relay(r, w, dest, delay), "127.0.0.1", 0, backlog=1024)
        servers.append(server)
        print(f"relay {server.sockets[0].getsockname()[1]} -> {target}", flush=True)
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
