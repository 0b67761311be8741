<?php
// Laravel Echo's path through the example, in plain PHP: what
// `scripts/laravel --check` runs through nginx. Pusher protocol 7 as pusher-js
// speaks it, so no browser is needed:
//
//   php php-example/laravel/tools/check.php http://127.0.0.1:8080/ APP_KEY
//
// 1. alice, bob and carol log in (the login form, its CSRF token, the session cookie);
// 2. alice opens /app/APP_KEY, is given a socket id, signs presence-room.lobby at
//    /broadcasting/auth and subscribes: subscription_succeeded lists her;
// 3. bob's request broadcast()s a message: alice receives App\Events\MessagePosted;
// 4. alice's own message (X-Socket-ID: her socket, ->toOthers()) is not sent back
//    to her, while bob's next one is;
// 5. carol is refused presence-room.staff (403) and alice's private channel.
// Prints what it saw and "OK", exit 0; or the reason on stderr, exit 1.

declare(strict_types=1);

const TIMEOUT_SECONDS = 20;

function fail(string $why): never
{
    fwrite(STDERR, "check: $why\n");
    exit(1);
}

/** A logged-in (or not) person: cookies kept between requests. */
final class Browser
{
    /** @var array<string, string> */
    public array $cookies = [];
    public string $csrf = '';

    public function __construct(private readonly string $base)
    {
    }

    /** @return array{0: int, 1: array<string, string>, 2: string} status, headers, body */
    public function request(string $method, string $path, array $form = [], array $headers = []): array
    {
        $lines = $headers;
        if ($this->cookies) {
            $lines[] = 'Cookie: ' . implode('; ', array_map(fn ($k, $v) => "$k=$v", array_keys($this->cookies), $this->cookies));
        }
        $body = http_build_query($form);
        if ($method === 'POST') {
            $lines[] = 'Content-Type: application/x-www-form-urlencoded';
        }
        $context = stream_context_create(['http' => [
            'method' => $method, 'header' => implode("\r\n", $lines), 'content' => $body,
            'follow_location' => 0, 'ignore_errors' => true, 'timeout' => TIMEOUT_SECONDS,
        ]]);
        $answer = @file_get_contents($this->base . ltrim($path, '/'), false, $context);
        if ($answer === false || !isset($http_response_header[0])) {
            fail("$method $path: no answer");
        }
        $status = (int) explode(' ', $http_response_header[0])[1];
        $out = [];
        foreach (array_slice($http_response_header, 1) as $line) {
            [$name, $value] = array_map('trim', explode(':', $line, 2)) + [1 => ''];
            if (strcasecmp($name, 'Set-Cookie') === 0) {
                [$pair] = explode(';', $value, 2);
                [$k, $v] = explode('=', $pair, 2) + [1 => ''];
                $this->cookies[$k] = $v;
            }
            $out[strtolower($name)] = $value;
        }
        return [$status, $out, $answer];
    }

    public function login(string $email): void
    {
        [, , $page] = $this->request('GET', 'login');
        preg_match('/name="_token" value="([^"]+)"/', $page, $m) || fail('no CSRF token in the login form');
        [$status, $headers] = $this->request('POST', 'login', ['_token' => $m[1], 'email' => $email, 'password' => 'secret']);
        ($status === 302 && str_ends_with($headers['location'] ?? '', '/rooms/lobby')) || fail("login as $email: $status " . ($headers['location'] ?? ''));
        [$status, , $page] = $this->request('GET', 'rooms/lobby');
        $status === 200 || fail("GET /rooms/lobby as $email: $status");
        preg_match('/name="csrf-token" content="([^"]+)"/', $page, $m) || fail('no csrf-token meta tag');
        $this->csrf = $m[1];
        echo "$email logged in\n";
    }

    /** @return array{0: int, 1: string} */
    public function post(string $path, array $form, ?string $socketId = null): array
    {
        $headers = ['X-CSRF-TOKEN: ' . $this->csrf, 'Accept: application/json'];
        if ($socketId !== null) {
            $headers[] = 'X-Socket-ID: ' . $socketId;
        }
        [$status, , $body] = $this->request('POST', $path, $form, $headers);
        return [$status, $body];
    }
}

/** A Pusher connection (protocol 7), text frames only. */
final class PusherSocket
{
    /** @var resource */
    private $sock;
    private string $buffer = '';
    public string $socketId;

    public function __construct(string $host, int $port, string $key)
    {
        $sock = @stream_socket_client("tcp://$host:$port", $errno, $errstr, TIMEOUT_SECONDS);
        $sock !== false || fail("cannot connect to $host:$port: $errstr");
        stream_set_timeout($sock, TIMEOUT_SECONDS);
        $this->sock = $sock;
        $nonce = base64_encode(random_bytes(16));
        fwrite($sock, "GET /app/$key?protocol=7&client=js&version=8.6.0 HTTP/1.1\r\nHost: $host:$port\r\n"
            . "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: $nonce\r\nSec-WebSocket-Version: 13\r\n\r\n");
        while (($end = strpos($this->buffer, "\r\n\r\n")) === false) {
            $chunk = fread($sock, 8192);
            ($chunk !== false && $chunk !== '') || fail('no handshake answer from /app/' . $key);
            $this->buffer .= $chunk;
        }
        $status = strtok($this->buffer, "\r\n");
        str_contains($status, ' 101 ') || fail("handshake refused: $status");
        $this->buffer = substr($this->buffer, $end + 4);
        $hello = $this->next();
        $hello['event'] === 'pusher:connection_established' || fail('expected pusher:connection_established, got ' . $hello['event']);
        $this->socketId = json_decode($hello['data'], true)['socket_id'];
    }

    public function send(array $message): void
    {
        $payload = json_encode($message, JSON_UNESCAPED_SLASHES);
        $len = strlen($payload);
        $head = chr(0x81) . ($len < 126 ? chr(0x80 | $len) : chr(0x80 | 126) . pack('n', $len));
        $mask = random_bytes(4);
        fwrite($this->sock, $head . $mask . ($payload ^ str_repeat($mask, intdiv($len + 3, 4))));
    }

    /** The next Pusher message; pings (WebSocket and pusher:ping) are answered and skipped. */
    public function next(): array
    {
        while (true) {
            [$b0, $b1] = array_values(unpack('C2', $this->read(2)));
            $len = $b1 & 0x7f;
            if ($len === 126) {
                $len = unpack('n', $this->read(2))[1];
            } elseif ($len === 127) {
                $len = unpack('J', $this->read(8))[1];
            }
            $payload = $len > 0 ? $this->read($len) : '';
            $opcode = $b0 & 0x0f;
            if ($opcode === 0x8) {
                fail('the server closed the connection: ' . bin2hex(substr($payload, 0, 2)) . ' ' . substr($payload, 2));
            }
            if ($opcode !== 0x1) {
                continue;
            }
            $message = json_decode($payload, true);
            is_array($message) && isset($message['event']) || fail("not a Pusher message: $payload");
            if ($message['event'] === 'pusher:ping') {
                $this->send(['event' => 'pusher:pong', 'data' => []]);
                continue;
            }
            return $message;
        }
    }

    private function read(int $n): string
    {
        while (strlen($this->buffer) < $n) {
            $chunk = fread($this->sock, 8192);
            ($chunk !== false && $chunk !== '') || fail(stream_get_meta_data($this->sock)['timed_out'] ? 'timed out waiting for the server' : 'connection closed');
            $this->buffer .= $chunk;
        }
        $out = substr($this->buffer, 0, $n);
        $this->buffer = substr($this->buffer, $n);
        return $out;
    }
}

[, $base, $key] = $argv + [null, null, null];
(is_string($base) && is_string($key)) || fail('usage: check.php BASE_URL APP_KEY');
$base = rtrim($base, '/') . '/';
$host = parse_url($base, PHP_URL_HOST);
$port = parse_url($base, PHP_URL_PORT) ?? 80;

$alice = new Browser($base);
$alice->login('alice@example.com');
$bob = new Browser($base);
$bob->login('bob@example.com');
$carol = new Browser($base);
$carol->login('carol@example.com');

$ws = new PusherSocket($host, $port, $key);
echo "connected through nginx, socket id {$ws->socketId}\n";

$channel = 'presence-room.lobby';
[$status, $body] = $alice->post('broadcasting/auth', ['channel_name' => $channel, 'socket_id' => $ws->socketId]);
$status === 200 || fail("/broadcasting/auth for $channel: $status $body");
$signed = json_decode($body, true);
$ws->send(['event' => 'pusher:subscribe', 'data' => ['channel' => $channel] + $signed]);
$ok = $ws->next();
$ok['event'] === 'pusher_internal:subscription_succeeded' || fail('expected subscription_succeeded, got ' . json_encode($ok));
$presence = json_decode($ok['data'], true)['presence'];
($presence['hash']['1']['name'] ?? null) === 'Alice' || fail('alice is not in the member list: ' . $ok['data']);
echo "subscribed to $channel, members: " . implode(', ', array_column($presence['hash'], 'name')) . "\n";

$token = 'check ' . bin2hex(random_bytes(4));
[$status, $body] = $bob->post('rooms/lobby/messages', ['text' => $token]);
$status === 200 || fail("bob's message: $status $body");
$event = $ws->next();
($event['event'] === 'App\\Events\\MessagePosted' && $event['channel'] === $channel) || fail('expected MessagePosted, got ' . json_encode($event));
$data = json_decode($event['data'], true);
($data['text'] === $token && $data['user']['name'] === 'Bob') || fail('wrong payload: ' . $event['data']);
echo "bob's broadcast() arrived: {$event['event']} {$event['data']}\n";

[$status] = $alice->post('rooms/lobby/messages', ['text' => 'mine ' . $token], $ws->socketId);
$status === 200 || fail("alice's message: $status");
[$status] = $bob->post('rooms/lobby/messages', ['text' => 'after ' . $token]);
$status === 200 || fail("bob's second message: $status");
$event = $ws->next();
$text = json_decode($event['data'], true)['text'] ?? null;
$text === 'after ' . $token || fail("toOthers(): alice received \"$text\" before bob's next message");
echo "toOthers(): alice's own message was not sent back to her; bob's next one was\n";

[$status] = $carol->post('broadcasting/auth', ['channel_name' => 'presence-room.staff', 'socket_id' => '1.1']);
$status === 403 || fail("carol on presence-room.staff: $status, expected 403");
[$status] = $carol->post('broadcasting/auth', ['channel_name' => 'private-user.1', 'socket_id' => '1.1']);
$status === 403 || fail("carol on private-user.1: $status, expected 403");
echo "carol was refused presence-room.staff and private-user.1 (403)\n";

echo "OK\n";
