"""A permessage-deflate peer for tests/deflate.rs: Debian's python3-websockets.

    client.py URL echo          text, binary and fragmented messages, echoed
    client.py URL members N     N connections; prints "ready", then what each got

Prints one JSON line per result; exits non-zero on any failure.
"""
import asyncio
import json
import sys

import websockets


async def connect(url):
    # websockets offers permessage-deflate by default (client_max_window_bits).
    ws = await websockets.connect(url, max_size=None, open_timeout=20)
    names = [type(e).__name__ for e in ws.extensions]
    assert names == ["PerMessageDeflate"], names
    assert await ws.recv() == "hello"
    return ws


async def echo(url):
    ws = await connect(url)
    checks = {}
    big_text = json.dumps([{"user": "ann", "text": "hello there", "n": i} for i in range(300)])
    big_binary = bytes(range(256)) * 64
    cases = {
        "text": big_text,
        "binary": big_binary,
        "small": "hi",
        # Fragments: RSV1 on the first frame only (RFC 7692 §6.1).
        "fragmented_text": [big_text[:1000], big_text[1000:5000], big_text[5000:]],
        "fragmented_binary": [big_binary[:10], big_binary[10:]],
    }
    for name, message in cases.items():
        await ws.send(message)
        got = await asyncio.wait_for(ws.recv(), 20)
        want = message if not isinstance(message, list) else message[0][:0].join(message)
        checks[name] = got == want
    await ws.close()
    print(json.dumps({"checks": checks, "extensions": ws.response_headers.get("Sec-WebSocket-Extensions")}))
    return all(checks.values())


async def members(url, n):
    socks = [await connect(url) for _ in range(n)]
    print("ready", flush=True)
    got = await asyncio.gather(*(asyncio.wait_for(ws.recv(), 30) for ws in socks))
    for ws in socks:
        await ws.close()
    print(json.dumps({"received": got}))
    return True


def main():
    url, scenario = sys.argv[1], sys.argv[2]
    if scenario == "echo":
        ok = asyncio.run(echo(url))
    else:
        ok = asyncio.run(members(url, int(sys.argv[3])))
    sys.exit(0 if ok else 1)


main()
