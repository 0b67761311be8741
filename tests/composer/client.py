"""A real WebSocket client for install-test: connects to the daemon on its
Unix socket, learns its connection id from echo.php's greeting, runs the
app's script (php app.php CONTROL ID) and checks what that script pushed
arrives: "direct", "to the channel", then the close frame 4000.

    python3 client.py WS_SOCKET APP_SCRIPT CONTROL_SOCKET

Exit 0 when the script passed and everything arrived in order.
"""

import asyncio
import sys

import websockets

TIMEOUT = 30


async def main(ws_socket: str, app: str, control: str) -> int:
    async with websockets.unix_connect(ws_socket, "ws://localhost/ws") as ws:
        greeting = await asyncio.wait_for(ws.recv(), TIMEOUT)
        prefix = "hello, you are connection "
        if not greeting.startswith(prefix):
            print(f"unexpected greeting: {greeting!r}")
            return 1
        conn = greeting[len(prefix):]
        php = await asyncio.create_subprocess_exec("php", app, control, conn)
        status = await asyncio.wait_for(php.wait(), TIMEOUT)
        got = []
        try:
            while True:
                got.append(await asyncio.wait_for(ws.recv(), TIMEOUT))
        except websockets.ConnectionClosed as closed:
            frame = (closed.code, closed.reason)
        expected = ["direct", "to the channel"]
        ok = status == 0 and got == expected and frame == (4000, "bye from the app")
        print(f"{'ok' if ok else 'FAILED'}: app exit {status}, received {got} (expected {expected}), close {frame}")
        return 0 if ok else 1


sys.exit(asyncio.run(main(*sys.argv[1:4])))
