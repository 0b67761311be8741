"""The Pusher side of install-test: a raw Pusher protocol 7 client (JSON
frames over Python's websockets) against the daemon's Pusher app whose
`script` is the app's pusher.php (Ws2fcgi\\Event, Ws2fcgi\\Response), and a
pusherPublish() from PHP through Composer's autoloader.

    python3 pusher_client.py WS_SOCKET APP_DIR CONTROL_SOCKET

Prints a line per check; exit 0 when all passed.
"""

import asyncio
import json
import os
import sys
import time

import websockets

TIMEOUT = 30
PATH = "ws://localhost/app/app-key?protocol=7&client=py&version=1.0"
failures = 0


def check(what, ok, detail=""):
    global failures
    print(("ok      " if ok else "FAILED  ") + what + ("" if ok or not detail else f": {detail}"))
    failures += 0 if ok else 1


async def recv(ws):
    """The next Pusher frame, its data decoded; pings are answered."""
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        if frame.get("event") == "pusher:ping":
            await ws.send(json.dumps({"event": "pusher:pong", "data": {}}))
            continue
        data = frame.get("data")
        if isinstance(data, str):
            try:
                frame["data"] = json.loads(data)
            except ValueError:
                pass
        return frame


async def connect():
    ws = await websockets.unix_connect(SOCKET, PATH)
    established = await recv(ws)
    return ws, established.get("data", {}).get("socket_id")


async def send(ws, event, data, channel=None):
    frame = {"event": event, "data": data}
    if channel:
        frame["channel"] = channel
    await ws.send(json.dumps(frame))


async def main(app, control):
    a, socket_a = await connect()
    check("connected: pusher:connection_established with a socket_id", bool(socket_a), repr(socket_a))
    await send(a, "pusher:subscribe", {"channel": "presence-room", "channel_data": json.dumps({"user_id": "claimed"})})
    got = await recv(a)
    presence = got.get("data", {}).get("presence", {})
    check("subscribe answered by Response::presence(): the member and its user_info",
          got.get("event") == "pusher_internal:subscription_succeeded"
          and presence.get("hash") == {"ada": {"name": "Ada", "claimed": "claimed"}}, repr(got))
    await send(a, "pusher:subscribe", {"channel": "private-secret"})
    got = await recv(a)
    check("subscribe refused by Response::refuse(403)",
          got.get("event") == "pusher:subscription_error" and got.get("data", {}).get("status") == 403, repr(got))

    b, socket_b = await connect()
    await send(b, "pusher:subscribe", {"channel": "presence-room"})
    got = await recv(b)
    check("a second connection of the same user subscribes",
          got.get("event") == "pusher_internal:subscription_succeeded", repr(got))

    await send(a, "client-typing", {"spam": True}, channel="presence-room")
    got = await recv(a)
    check("a client event refused by Response::refuse(422) gets pusher:error",
          got.get("event") == "pusher:error", repr(got))
    await send(a, "client-typing", {"n": 1}, channel="presence-room")
    got = await recv(b)
    check("an accepted client event is relayed (and the refused one was not)",
          got.get("event") == "client-typing" and got.get("data") == {"n": 1}, repr(got))

    php = await asyncio.create_subprocess_exec(
        "php", "-r",
        'require $argv[1]; echo (new Ws2fcgi\\Client($argv[2]))'
        '->pusherPublish("1001", "presence-room", "news", ["n" => 2], $argv[3]);',
        os.path.join(app, "vendor", "autoload.php"), control, socket_a,
        stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(php.communicate(), TIMEOUT)
    check("Client::pusherPublish() leaving out the sender's socket: delivered 1", out == b"1", repr(out))
    got = await recv(b)
    check("...and the other connection receives it", got.get("event") == "news" and got.get("data") == {"n": 2},
          repr(got))

    await a.close()
    await b.close()

    # The webhooks and the closes arrive after the connections are gone: poll the log.
    log_path = os.path.join(app, "var", "pusher-events.log")
    wanted = {"member_added", "member_removed", "channel_occupied", "channel_vacated", "close"}
    deadline = time.monotonic() + TIMEOUT
    while True:
        lines = [json.loads(line) for line in open(log_path)] if os.path.exists(log_path) else []
        kinds = {line["kind"] for line in lines}
        closes = [line for line in lines if line["kind"] == "close"]
        if (wanted <= kinds and len(closes) >= 2) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)

    def first(kind, **fields):
        for line in lines:
            if line["kind"] == kind and all(line.get(k) == v for k, v in fields.items()):
                return line
        return None

    sub = first("subscribe", channel="presence-room", socket=socket_a)
    check("Event of a subscribe: channel, socket id, connection id, metadata, a Pusher event",
          sub is not None and sub["conn"] and sub["app"] == "1001" and sub["meta"] == "ada" and sub["pusher"],
          repr(sub))
    ce = first("client_event", name="client-typing", channel="presence-room")
    check("Event of a client_event: its name and channel", ce is not None and ce["socket"] == socket_a, repr(ce))
    added = first("member_added", channel="presence-room")
    check("Event of member_added: the user, no connection",
          added is not None and added["user"] == "ada" and added["conn"] is None and added["socket"] is None,
          repr(added))
    check("Event of channel_occupied and channel_vacated: the channel",
          first("channel_occupied", channel="presence-room") is not None
          and first("channel_vacated", channel="presence-room") is not None, repr(sorted(kinds)))
    check("Event of member_removed: the user", first("member_removed", user="ada") is not None)
    check("Event of close: a close code", len(closes) >= 2 and all(isinstance(c["code"], int) for c in closes),
          repr(closes))
    return 0 if failures == 0 else 1


SOCKET = sys.argv[1]
sys.exit(asyncio.run(main(sys.argv[2], sys.argv[3])))
