"""The Symfony test's client: the app's pages through PHP's built-in web
server (as nginx would serve them), its WebSocket endpoint through the real
daemon, and checks of what each side sees.

    python3 client.py APP_DIR WS_SOCKET CONTROL_SOCKET

Prints a line per check; exit 0 when all passed.
"""

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import websockets

TIMEOUT = 30
failures = 0


def check(what, ok, detail=""):
    global failures
    print(("ok      " if ok else "FAILED  ") + what + ("" if ok or not detail else f": {detail}"))
    failures += 0 if ok else 1


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, headers=None):
    """(status, headers, body) of a GET; errors are answers too."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


async def recv(ws):
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


async def events(app, ws_socket, base):
    path = "ws://localhost/ws"
    try:
        async with websockets.unix_connect(ws_socket, path):
            check("open without a session cookie is refused", False, "accepted")
    except websockets.InvalidStatusCode as refused:
        check("open without a session cookie is refused with 403", refused.status_code == 403,
              str(refused.status_code))

    status, headers, body = http_get(f"{base}/login?user=ada")
    cookie = (headers.get("Set-Cookie") or "").split(";")[0]
    check("the login page starts a session", status == 200 and cookie.startswith("PHPSESSID="),
          f"{status} {cookie!r} {body!r}")
    with_cookie = {"extra_headers": {"Cookie": cookie}}

    async with websockets.unix_connect(ws_socket, path, **with_cookie) as a, \
            websockets.unix_connect(ws_socket, path, **with_cookie) as b:
        check("open with the session is accepted; the controller read the session",
              await recv(a) == "hello ada" and await recv(b) == "hello ada")
        await a.send("hi")
        echo = json.loads(await recv(a))
        check("a message: the controller gets the Event and the session",
              echo == {"user": "ada", "meta": "ada", "echo": "hi"}, repr(echo))

        await a.send("others:hey")
        got = json.loads(await recv(b))
        check("Publisher::publish(toOthers: true) reaches the others", got == {"from": "ada", "text": "hey"},
              repr(got))
        await a.send("ping")
        got = json.loads(await recv(a))
        check("...and not the sender (its next message is its own echo)", got.get("echo") == "ping", repr(got))

        status, _, body = http_get(f"{base}/announce?text=news!")
        check("Publisher from an ordinary page", status == 200 and body == "delivered 2\n", f"{status} {body!r}")
        got_a, got_b = json.loads(await recv(a)), json.loads(await recv(b))
        check("...arrives on both connections", got_a == got_b == {"announce": "news!"}, f"{got_a} {got_b}")

        await a.send("boom")
        try:
            extra = await recv(a)
            check("a controller's exception closes with 1011", False, f"got a message {extra!r}")
        except websockets.ConnectionClosed as closed:
            check("a controller's exception (Symfony's 500) closes with 1011 \"server error (500)\"",
                  (closed.code, closed.reason) == (1011, "server error (500)"), f"{closed.code} {closed.reason!r}")
        await b.send("still here?")
        check("the other connection is unaffected", json.loads(await recv(b)).get("echo") == "still here?")
        await b.send("forbidden")
        try:
            extra = await recv(b)
            check("an AccessDeniedHttpException closes with 1008", False, f"got a message {extra!r}")
        except websockets.ConnectionClosed as closed:
            check("an AccessDeniedHttpException (403) closes with 1008 \"refused (403)\"",
                  (closed.code, closed.reason) == (1008, "refused (403)"), f"{closed.code} {closed.reason!r}")

    status, _, _ = http_get(f"{base}/ws", {"Cookie": cookie})
    check("/ws over plain HTTP (not an event) is 400", status == 400, str(status))


def main(app, ws_socket, control):
    port = free_port()
    log = open(os.path.join(app, "var", "php-server.log"), "w")
    server = subprocess.Popen(
        ["php", "-S", f"127.0.0.1:{port}", "-t", os.path.join(app, "public"),
         os.path.join(app, "public", "index.php")],
        env={**os.environ, "WS_CONTROL_SOCKET": control}, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    print("FAILED  php -S did not start")
                    return 1
                time.sleep(0.05)
        asyncio.run(events(app, ws_socket, f"http://127.0.0.1:{port}"))
    finally:
        server.terminate()
        server.wait(TIMEOUT)
    return 0 if failures == 0 else 1


sys.exit(main(*sys.argv[1:4]))
