<?php
// Subscriptions authorized by ws.php (auth = "php"), as fast as they go: what
// scripts/bench-laravel measures for the Pusher side.
//
//   LARAVEL_RUN_DIR=… php subscribe-bench.php HOST:PORT APP_KEY SECONDS CONNECTIONS
//
// Logs alice in through the app's HTTP kernel in this process (the run
// directory's key and session files are the ones php-fpm uses), then opens
// CONNECTIONS Pusher connections with her session cookie, and on each one
// subscribes to private-user.1 and unsubscribes, one subscription in flight
// per connection, for SECONDS. Prints one JSON line: {"cycles":N,"seconds":S}.
// Each cycle is one subscribe event through Laravel, plus channel_occupied and
// channel_vacated, which ws.php answers without booting the app.

declare(strict_types=1);

require __DIR__ . '/../bootstrap/autoload.php';

use Illuminate\Contracts\Http\Kernel;
use Illuminate\Http\Request;
use Illuminate\Support\Facades\Facade;

function fail(string $why): never
{
    fwrite(STDERR, "subscribe-bench: $why\n");
    exit(1);
}

[, $address, $key, $seconds, $connections] = $argv + [null, null, null, '5', '8'];
(is_string($address) && is_string($key)) || fail('usage: subscribe-bench.php HOST:PORT APP_KEY SECONDS CONNECTIONS');

/** One request through the app's kernel in this process; the cookies it sets are kept. */
function page(array &$cookies, string $method, string $uri, array $form = []): Symfony\Component\HttpFoundation\Response
{
    Facade::clearResolvedInstances();
    $app = require __DIR__ . '/../bootstrap/app.php';
    $response = $app->make(Kernel::class)->handle(Request::create($uri, $method, $form, $cookies));
    foreach ($response->headers->getCookies() as $cookie) {
        $cookies[$cookie->getName()] = (string) $cookie->getValue();
    }
    return $response;
}

$cookies = [];
preg_match('/name="_token" value="([^"]+)"/', (string) page($cookies, 'GET', '/login')->getContent(), $m) || fail('no login form');
page($cookies, 'POST', '/login', ['_token' => $m[1], 'email' => 'alice@example.com', 'password' => 'secret'])->getStatusCode() === 302 || fail('login failed');
$cookie = 'Cookie: ' . implode('; ', array_map(fn ($k, $v) => "$k=" . rawurlencode($v), array_keys($cookies), $cookies));

/** A Pusher connection; returns [socket, buffer]. */
function connect(string $address, string $key, string $cookie): array
{
    $sock = stream_socket_client("tcp://$address", $errno, $errstr, 10) ?: fail("connect: $errstr");
    stream_set_timeout($sock, 10);
    fwrite($sock, "GET /app/$key?protocol=7&client=js&version=8.6.0 HTTP/1.1\r\nHost: $address\r\nUpgrade: websocket\r\n"
        . "Connection: Upgrade\r\nSec-WebSocket-Key: " . base64_encode(random_bytes(16)) . "\r\nSec-WebSocket-Version: 13\r\n$cookie\r\n\r\n");
    $buffer = '';
    while (($end = strpos($buffer, "\r\n\r\n")) === false) {
        $chunk = fread($sock, 8192);
        ($chunk !== false && $chunk !== '') || fail('no handshake answer');
        $buffer .= $chunk;
    }
    str_contains(strtok($buffer, "\r\n"), ' 101 ') || fail('handshake refused: ' . strtok($buffer, "\r\n"));
    $buffer = substr($buffer, $end + 4);
    $conn = [$sock, $buffer];
    next_event($conn) === 'pusher:connection_established' || fail('no connection_established');
    return $conn;
}

function send(array $conn, array $message): void
{
    $payload = json_encode($message);
    $mask = random_bytes(4);
    fwrite($conn[0], chr(0x81) . chr(0x80 | strlen($payload)) . $mask . ($payload ^ str_repeat($mask, intdiv(strlen($payload) + 3, 4))));
}

/** The next Pusher event's name (frames are short: no extended lengths past 16 bits). */
function next_event(array &$conn): string
{
    while (true) {
        while (strlen($conn[1]) < 4) {
            $chunk = fread($conn[0], 8192);
            ($chunk !== false && $chunk !== '') || fail('connection closed');
            $conn[1] .= $chunk;
        }
        $len = ord($conn[1][1]) & 0x7f;
        $head = 2;
        if ($len === 126) {
            $len = unpack('n', substr($conn[1], 2, 2))[1];
            $head = 4;
        }
        while (strlen($conn[1]) < $head + $len) {
            $chunk = fread($conn[0], 8192);
            ($chunk !== false && $chunk !== '') || fail('connection closed');
            $conn[1] .= $chunk;
        }
        $payload = substr($conn[1], $head, $len);
        $conn[1] = substr($conn[1], $head + $len);
        $event = json_decode($payload, true)['event'] ?? null;
        if ($event === 'pusher:ping') {
            send($conn, ['event' => 'pusher:pong', 'data' => []]);
            continue;
        }
        return (string) $event;
    }
}

$conns = [];
for ($i = 0; $i < (int) $connections; $i++) {
    $conns[] = connect($address, $key, $cookie);
}
$subscribe = ['event' => 'pusher:subscribe', 'data' => ['channel' => 'private-user.1', 'auth' => '']];
$unsubscribe = ['event' => 'pusher:unsubscribe', 'data' => ['channel' => 'private-user.1']];
$cycles = 0;
$start = microtime(true);
$deadline = $start + (float) $seconds;
foreach ($conns as $c) {
    send($c, $subscribe);
}
while (microtime(true) < $deadline) {
    $read = array_map(fn ($c) => $c[0], $conns);
    $w = $e = null;
    if (stream_select($read, $w, $e, 10) < 1) {
        fail('no answer within 10 s');
    }
    foreach ($read as $sock) {
        $i = array_search($sock, array_map(fn ($c) => $c[0], $conns), true);
        $event = next_event($conns[$i]);
        $event === 'pusher_internal:subscription_succeeded' || fail("expected subscription_succeeded, got $event");
        $cycles++;
        send($conns[$i], $unsubscribe);
        send($conns[$i], $subscribe);
    }
}
echo json_encode(['cycles' => $cycles, 'seconds' => round(microtime(true) - $start, 3)]), "\n";
