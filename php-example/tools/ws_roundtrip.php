<?php
// One chat round trip over a real WebSocket, in plain PHP (no extensions
// beyond the standard ones): what `scripts/chat --check` runs through nginx.
//
//   php php-example/tools/ws_roundtrip.php ws://127.0.0.1:8080/ws ROOM TEXT
//
// 1. joins ROOM as "probe" and expects the welcome;
// 2. joins ROOM as "probe" again (another browser: no cookie) and expects the
//    handshake to be refused with 409;
// 3. sends {"type":"say","text":TEXT} and expects it back from the room,
//    then {"type":"backlog","after":<its id - 1>} and expects it in the answer;
// 4. sends a message that is not JSON and expects an error answer;
// 5. closes with 1000 and expects the server's close frame.
// Prints what it saw and "OK", exit 0; or the reason on stderr, exit 1.

declare(strict_types=1);

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const TIMEOUT_SECONDS = 10;
const NICK = 'probe';

function fail(string $why): never
{
    fwrite(STDERR, "ws_roundtrip: $why\n");
    exit(1);
}

/** Reads exactly $n bytes, taking what is left in $buffer first. */
function read_exact($sock, string &$buffer, int $n): string
{
    while (strlen($buffer) < $n) {
        $chunk = fread($sock, max(8192, $n - strlen($buffer)));
        if ($chunk === false || $chunk === '') {
            fail(stream_get_meta_data($sock)['timed_out'] ? 'timed out waiting for the server' : 'connection closed by the server');
        }
        $buffer .= $chunk;
    }
    $out = substr($buffer, 0, $n);
    $buffer = substr($buffer, $n);
    return $out;
}

/** One masked client frame (RFC 6455 section 5.3: clients must mask). */
function frame(int $opcode, string $payload): string
{
    $len = strlen($payload);
    $head = chr(0x80 | $opcode);
    if ($len < 126) {
        $head .= chr(0x80 | $len);
    } elseif ($len < 65536) {
        $head .= chr(0x80 | 126) . pack('n', $len);
    } else {
        $head .= chr(0x80 | 127) . pack('J', $len);
    }
    $mask = random_bytes(4);
    return $head . $mask . ($payload ^ str_repeat($mask, intdiv($len + 3, 4)));
}

/** The next whole server frame as [opcode, payload]; pings are answered and skipped. */
function read_frame($sock, string &$buffer): array
{
    while (true) {
        [$b0, $b1] = array_values(unpack('C2', read_exact($sock, $buffer, 2)));
        if (($b0 & 0x80) === 0) {
            fail('fragmented frames are not handled by this small client');
        }
        if ($b1 & 0x80) {
            fail('the server sent a masked frame');
        }
        $len = $b1 & 0x7f;
        if ($len === 126) {
            $len = unpack('n', read_exact($sock, $buffer, 2))[1];
        } elseif ($len === 127) {
            $len = unpack('J', read_exact($sock, $buffer, 8))[1];
        }
        $payload = $len > 0 ? read_exact($sock, $buffer, $len) : '';
        $opcode = $b0 & 0x0f;
        if ($opcode === 0x9) {
            fwrite($sock, frame(0xA, $payload));
        } elseif ($opcode !== 0xA) {
            return [$opcode, $payload];
        }
    }
}

/** The next text message, decoded as a JSON object. */
function read_json($sock, string &$buffer): array
{
    [$opcode, $payload] = read_frame($sock, $buffer);
    if ($opcode !== 0x1) {
        fail("expected a text message, got opcode $opcode");
    }
    $data = json_decode($payload, true);
    if (!is_array($data) || !isset($data['type'])) {
        fail("expected a JSON object with a type, got: $payload");
    }
    return $data;
}

/**
 * Sends the handshake; returns [socket, status line, headers (lower-case names), the bytes after them].
 */
function handshake(string $host, int $port, string $target): array
{
    $sock = @stream_socket_client("tcp://$host:$port", $errno, $errstr, TIMEOUT_SECONDS);
    if ($sock === false) {
        fail("cannot connect to $host:$port: $errstr");
    }
    stream_set_timeout($sock, TIMEOUT_SECONDS);
    $key = base64_encode(random_bytes(16));
    fwrite($sock, "GET $target HTTP/1.1\r\nHost: $host:$port\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        . "Sec-WebSocket-Key: $key\r\nSec-WebSocket-Version: 13\r\nOrigin: http://$host:$port\r\n\r\n");
    $buffer = '';
    while (($end = strpos($buffer, "\r\n\r\n")) === false) {
        $chunk = fread($sock, 8192);
        if ($chunk === false || $chunk === '' || strlen($buffer) > 65536) {
            fail('no complete handshake answer');
        }
        $buffer .= $chunk;
    }
    $lines = explode("\r\n", substr($buffer, 0, $end));
    $headers = [];
    foreach (array_slice($lines, 1) as $line) {
        [$name, $value] = array_map('trim', explode(':', $line, 2)) + [1 => ''];
        $headers[strtolower($name)] = $value;
    }
    if (str_contains($lines[0], ' 101 ') && ($headers['sec-websocket-accept'] ?? '') !== base64_encode(sha1($key . GUID, true))) {
        fail('wrong Sec-WebSocket-Accept in the 101 answer');
    }
    return [$sock, $lines[0], $headers, substr($buffer, $end + 4)];
}

/** The body of a refused handshake (nginx may send it chunked or with a length). */
function refusal_body($sock, array $headers, string $rest): string
{
    while (!feof($sock) && strlen($rest) < 65536) {
        $length = (int) ($headers['content-length'] ?? -1);
        if ($length >= 0 && strlen($rest) >= $length) {
            break;
        }
        $chunk = fread($sock, 8192);
        if ($chunk === false || $chunk === '') {
            break;
        }
        $rest .= $chunk;
    }
    if (stripos($headers['transfer-encoding'] ?? '', 'chunked') !== false) {
        $body = '';
        while (preg_match('/^([0-9a-fA-F]+)\r\n/', $rest, $m) && hexdec($m[1]) > 0) {
            $body .= substr($rest, strlen($m[0]), hexdec($m[1]));
            $rest = substr($rest, strlen($m[0]) + hexdec($m[1]) + 2);
        }
        return $body;
    }
    return $rest;
}

[$url, $room, $text] = array_slice($argv, 1) + [null, null, null];
$parts = parse_url((string) $url);
if (($parts['scheme'] ?? '') !== 'ws' || !isset($parts['host']) || $room === null || $text === null) {
    fail('usage: php ws_roundtrip.php ws://HOST:PORT/ws ROOM TEXT');
}
$host = $parts['host'];
$port = $parts['port'] ?? 80;
$target = ($parts['path'] ?? '/') . '?' . http_build_query(['room' => $room, 'nick' => NICK]);

// 1. Join.
[$sock, $status, , $buffer] = handshake($host, $port, $target);
if (!str_contains($status, ' 101 ')) {
    fail("handshake refused: $status");
}
$welcome = read_json($sock, $buffer);
if ($welcome['type'] !== 'welcome' || ($welcome['you']['nick'] ?? null) !== NICK) {
    fail('expected the welcome, got: ' . json_encode($welcome));
}
printf("joined:   #%s as %s (%d in the room)\n", $room, NICK, count($welcome['members']));

// 2. The same nickname from another browser is refused.
[$other, $status, $headers, $rest] = handshake($host, $port, $target);
$body = trim(refusal_body($other, $headers, $rest));
fclose($other);
if (!str_contains($status, ' 409 ') || !str_contains($body, 'taken')) {
    fail("expected 409 \"taken\" for a second \"probe\", got: $status / $body");
}
echo "refused:  a second \"probe\": $status ($body)\n";

// 3. Say something; the room (the sender included) gets it with its history id.
fwrite($sock, frame(0x1, json_encode(['type' => 'say', 'text' => $text])));
do {
    $event = read_json($sock, $buffer);
} while ($event['type'] !== 'message' && $event['type'] !== 'error');
if ($event['type'] !== 'message' || $event['text'] !== $text || $event['nick'] !== NICK) {
    fail('expected my message back, got: ' . json_encode($event));
}
echo "message:  id {$event['id']} came back from the room\n";

// 3b. The backlog after the message before it holds it (what a page asks
// for when it could not catch up from the channel's history).
fwrite($sock, frame(0x1, json_encode(['type' => 'backlog', 'after' => $event['id'] - 1])));
$backlog = read_json($sock, $buffer);
if ($backlog['type'] !== 'backlog' || array_column($backlog['messages'] ?? [], 'id') !== [$event['id']]) {
    fail('expected a backlog of my message alone, got: ' . json_encode($backlog));
}
echo "backlog:  after id " . ($event['id'] - 1) . " holds id {$event['id']}\n";

// 4. Not JSON: an error for the sender, the connection stays open.
fwrite($sock, frame(0x1, 'hello?'));
$error = read_json($sock, $buffer);
if ($error['type'] !== 'error') {
    fail('expected an error for a message that is not JSON, got: ' . json_encode($error));
}
echo "invalid:  answered with \"{$error['error']}\"\n";

// 5. Close.
fwrite($sock, frame(0x8, pack('n', 1000) . 'bye'));
[$opcode, $payload] = read_frame($sock, $buffer);
if ($opcode !== 0x8) {
    fail("expected the server's close frame, got opcode $opcode");
}
printf("closed:   the server answered with %s\n", strlen($payload) >= 2 ? unpack('n', $payload)[1] : 'no code');
fclose($sock);
echo "OK\n";
