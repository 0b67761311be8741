"""A real WebSocket client for install-test, against the daemon running the
app's ws.php (Ws2fcgi\\Event and Ws2fcgi\\Response, installed with
Composer) on its Unix socket:

1. a handshake without ?token=ok is refused with 403;
2. with it, the welcome names the connection; whoami shows the metadata the
   open answer set; forget deletes it; a binary message comes back binary;
3. the app's script (php app.php CONTROL ID) pushes through the control
   socket: "direct", "to the channel", then closes with 4000;
4. a second connection's "bye" gets "closing" and the close frame 4001.

    python3 client.py WS_SOCKET APP_SCRIPT CONTROL_SOCKET

Prints a line per check; exit 0 when all passed.
"""

import asyncio
import json
import sys

import websockets

TIMEOUT = 30
failures = 0


def check(what, ok, detail=""):
    global failures
    print(("ok      " if ok else "FAILED  ") + what + ("" if ok or not detail else f": {detail}"))
    failures += 0 if ok else 1


async def recv(ws):
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


async def closed_with(ws):
    """Reads until the close frame; returns (messages, (code, reason))."""
    got = []
    try:
        while True:
            got.append(await recv(ws))
    except websockets.ConnectionClosed as closed:
        return got, (closed.code, closed.reason)


async def main(ws_socket, app, control):
    try:
        async with websockets.unix_connect(ws_socket, "ws://localhost/ws"):
            check("open without a token is refused", False, "accepted")
    except websockets.InvalidStatusCode as refused:
        check("open without a token is refused with 403", refused.status_code == 403, str(refused.status_code))

    async with websockets.unix_connect(ws_socket, "ws://localhost/ws?token=ok") as ws:
        welcome = json.loads(await recv(ws))
        conn = welcome.get("id", "")
        check("the welcome names the connection", len(conn) == 40, repr(welcome))
        await ws.send("whoami")
        whoami = json.loads(await recv(ws))
        check("Event: id, metadata set by the open answer, message type",
              whoami == {"id": conn, "user": "ada", "type": "text"}, repr(whoami))
        await ws.send("forget")
        check("a reply with a metadata deletion", await recv(ws) == "forgotten")
        await ws.send("whoami")
        whoami = json.loads(await recv(ws))
        check("meta(name, null) deleted the entry", whoami.get("user", "missing") is None, repr(whoami))
        await ws.send(b"\x01\x02\xff")
        echoed = await recv(ws)
        check("reply(binary: true) is a binary message", echoed == b"\xff\x02\x01", repr(echoed))
        await ws.send("hello")
        check("a text reply", json.loads(await recv(ws)) == {"echo": "hello"})

        php = await asyncio.create_subprocess_exec("php", app, control, conn)
        status = await asyncio.wait_for(php.wait(), TIMEOUT)
        check("the app's script passed", status == 0, f"exit {status}")
        got, frame = await closed_with(ws)
        check("what it pushed arrived, then its close frame",
              got == ["direct", "to the channel"] and frame == (4000, "bye from the app"), f"{got} {frame}")

    async with websockets.unix_connect(ws_socket, "ws://localhost/ws?token=ok") as ws:
        await recv(ws)
        await ws.send("bye")
        got, frame = await closed_with(ws)
        check("close(4001) after the reply", got == ["closing"] and frame == (4001, "asked to"), f"{got} {frame}")
    return 0 if failures == 0 else 1


sys.exit(asyncio.run(main(*sys.argv[1:4])))
