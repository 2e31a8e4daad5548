"""`python -m atelier.cli.relay LISTEN_HOST:PORT TARGET_HOST:PORT`: a plain TCP relay.

`atelier up --listen ADDR` with a PostgreSQL that listens on loopback only (the usual local install)
relays it on ADDR, so that worker hosts reach the same database without reconfiguring the server.
Bytes pass through untouched (PostgreSQL's own authentication and TLS apply); a closed side closes
the other.
"""

from __future__ import annotations

import asyncio
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


async def serve(listen: str, target: str) -> None:
    target_host, target_port = _split(target)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(target_host, target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    host, port = _split(listen)
    server = await asyncio.start_server(handle, host, port, reuse_address=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2]))
