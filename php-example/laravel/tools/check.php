<?php
// Laravel Echo's path through the example, in plain PHP: what
// `scripts/laravel --check` runs through nginx. Pusher protocol 7 as pusher-js
// speaks it, so no browser is needed:
//
//   php php-example/laravel/tools/check.php http://127.0.0.1:8080/ APP_KEY [php|endpoint]
//
// php: the app has auth = "php" (the handshake carries the session cookie, the
// subscriptions no signature); endpoint (the default): they are signed by
// /broadcasting/auth, as Echo's authEndpoint would.
//
// 1. alice, bob and carol log in (the login form, its CSRF token, the session cookie);
// 2. alice opens /app/APP_KEY, is given a socket id and subscribes to
//    presence-room.lobby: subscription_succeeded lists her;
// 3. bob's request broadcast()s a message: alice receives App\Events\MessagePosted;
// 4. alice's own message (X-Socket-ID: her socket, ->toOthers()) is not sent back
//    to her, while bob's next one is;
// 5. carol is refused presence-room.staff (403) and alice's private channel, by
//    /broadcasting/auth and (php) over her own WebSocket, where her own private
//    channel is granted.
// 6. raw WebSocket routes through ws.php: /ws/echo echoes a message (no 419),
//    a foreign Origin is refused (403), a guest is sent to the login page (302),
//    /ws/me greets alice from her session and an exception closes it with 1011.
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

/** A WebSocket client connection: text frames out, whole frames in. */
final class WebSocket
{
    private string $buffer = '';

    /** @param resource $sock */
    private function __construct(private $sock, string $rest)
    {
        $this->buffer = $rest;
    }

    /**
     * The handshake; returns [status line, the connection or null when refused].
     *
     * @param list<string> $headers
     * @return array{0: string, 1: ?self}
     */
    public static function open(string $host, int $port, string $target, array $headers = []): array
    {
        $sock = @stream_socket_client("tcp://$host:$port", $errno, $errstr, TIMEOUT_SECONDS);
        $sock !== false || fail("cannot connect to $host:$port: $errstr");
        stream_set_timeout($sock, TIMEOUT_SECONDS);
        $nonce = base64_encode(random_bytes(16));
        $extra = $headers ? implode("\r\n", $headers) . "\r\n" : '';
        fwrite($sock, "GET $target HTTP/1.1\r\nHost: $host:$port\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            . "Sec-WebSocket-Key: $nonce\r\nSec-WebSocket-Version: 13\r\n$extra\r\n");
        $buffer = '';
        while (($end = strpos($buffer, "\r\n\r\n")) === false) {
            $chunk = fread($sock, 8192);
            ($chunk !== false && $chunk !== '') || fail("no handshake answer from $target");
            $buffer .= $chunk;
        }
        $status = strtok($buffer, "\r\n");
        if (!str_contains($status, ' 101 ')) {
            fclose($sock);
            return [$status, null];
        }
        return [$status, new self($sock, substr($buffer, $end + 4))];
    }

    public function send(string $text): void
    {
        $len = strlen($text);
        $head = chr(0x81) . ($len < 126 ? chr(0x80 | $len) : chr(0x80 | 126) . pack('n', $len));
        $mask = random_bytes(4);
        fwrite($this->sock, $head . $mask . ($text ^ str_repeat($mask, intdiv($len + 3, 4))));
    }

    /** The next data or close frame as [opcode, payload]; pings are skipped. */
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
            if ($opcode === 0x1 || $opcode === 0x2 || $opcode === 0x8) {
                return [$opcode, $payload];
            }
        }
    }

    /** The next text message. */
    public function text(): string
    {
        [$opcode, $payload] = $this->next();
        if ($opcode === 0x8) {
            fail('the server closed the connection: ' . self::closeText($payload));
        }
        return $payload;
    }

    /** "<code> <reason>" of a close frame's payload. */
    public static function closeText(string $payload): string
    {
        return strlen($payload) >= 2 ? unpack('n', $payload)[1] . ' ' . substr($payload, 2) : '(no code)';
    }

    public function close(): void
    {
        fclose($this->sock);
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

/** A Pusher connection (protocol 7) on a WebSocket. */
final class PusherSocket
{
    private WebSocket $ws;
    public string $socketId;

    /** @param list<string> $headers */
    public function __construct(string $host, int $port, string $key, array $headers = [])
    {
        [$status, $ws] = WebSocket::open($host, $port, "/app/$key?protocol=7&client=js&version=8.6.0", $headers);
        $ws !== null || fail("handshake refused: $status");
        $this->ws = $ws;
        $hello = $this->next();
        $hello['event'] === 'pusher:connection_established' || fail('expected pusher:connection_established, got ' . $hello['event']);
        $this->socketId = json_decode($hello['data'], true)['socket_id'];
    }

    public function send(array $message): void
    {
        $this->ws->send(json_encode($message, JSON_UNESCAPED_SLASHES));
    }

    /** The next Pusher message; pusher:ping is answered and skipped. */
    public function next(): array
    {
        while (true) {
            $payload = $this->ws->text();
            $message = json_decode($payload, true);
            is_array($message) && isset($message['event']) || fail("not a Pusher message: $payload");
            if ($message['event'] === 'pusher:ping') {
                $this->send(['event' => 'pusher:pong', 'data' => []]);
                continue;
            }
            return $message;
        }
    }
}

[, $base, $key, $mode] = $argv + [null, null, null, 'endpoint'];
(is_string($base) && is_string($key) && in_array($mode, ['php', 'endpoint'], true)) || fail('usage: check.php BASE_URL APP_KEY [php|endpoint]');
$base = rtrim($base, '/') . '/';
$host = parse_url($base, PHP_URL_HOST);
$port = parse_url($base, PHP_URL_PORT) ?? 80;

$alice = new Browser($base);
$alice->login('alice@example.com');
$bob = new Browser($base);
$bob->login('bob@example.com');
$carol = new Browser($base);
$carol->login('carol@example.com');

$cookie = fn (Browser $b) => 'Cookie: ' . implode('; ', array_map(fn ($k, $v) => "$k=$v", array_keys($b->cookies), $b->cookies));

/** Subscribes; returns the server's answer (subscription_succeeded or subscription_error). */
function subscribe(PusherSocket $ws, string $channel, array $auth): array
{
    $ws->send(['event' => 'pusher:subscribe', 'data' => ['channel' => $channel] + $auth]);
    $answer = $ws->next();
    in_array($answer['event'], ['pusher_internal:subscription_succeeded', 'pusher:subscription_error'], true)
        || fail("expected the answer to the subscription to $channel, got " . json_encode($answer));
    return $answer;
}

// auth = "php": the handshake carries the session cookie, the subscription no
// signature; ws2fcgi asks ws.php, which runs routes/channels.php.
$ws = new PusherSocket($host, $port, $key, $mode === 'php' ? [$cookie($alice)] : []);
echo "connected through nginx, socket id {$ws->socketId}\n";

$channel = 'presence-room.lobby';
[$status, $body] = $alice->post('broadcasting/auth', ['channel_name' => $channel, 'socket_id' => $ws->socketId]);
$status === 200 || fail("/broadcasting/auth for $channel: $status $body");
$signed = json_decode($body, true);
$ok = subscribe($ws, $channel, $mode === 'php' ? ['auth' => '', 'channel_data' => '{"user_id":1}'] : $signed);
$ok['event'] === 'pusher_internal:subscription_succeeded' || fail('expected subscription_succeeded, got ' . json_encode($ok));
$presence = json_decode($ok['data'], true)['presence'];
($presence['hash']['1']['name'] ?? null) === 'Alice' || fail('alice is not in the member list: ' . $ok['data']);
echo "subscribed to $channel (" . ($mode === 'php' ? 'authorized by ws.php from her session' : 'signed by /broadcasting/auth') . "), members: " . implode(', ', array_column($presence['hash'], 'name')) . "\n";

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
echo "/broadcasting/auth refused carol presence-room.staff and private-user.1 (403)\n";
if ($mode === 'php') {
    $theirs = new PusherSocket($host, $port, $key, [$cookie($carol)]);
    foreach (['presence-room.staff' => ['auth' => '', 'channel_data' => '{"user_id":3}'], 'private-user.1' => ['auth' => '']] as $name => $auth) {
        $answer = subscribe($theirs, $name, $auth);
        ($answer['event'] === 'pusher:subscription_error' && (json_decode($answer['data'], true)['status'] ?? null) === 403)
            || fail("carol's subscription to $name: " . json_encode($answer));
    }
    $answer = subscribe($theirs, 'private-user.3', ['auth' => '']);
    $answer['event'] === 'pusher_internal:subscription_succeeded' || fail("carol's own private channel: " . json_encode($answer));
    echo "over her WebSocket, ws.php refused carol presence-room.staff and private-user.1 (403) and gave her private-user.3\n";
}

// Raw WebSocket routes (Route::websocket), through ws.php and the HTTP kernel.
[$status, $echo] = WebSocket::open($host, $port, '/ws/echo', ["Origin: http://$host:$port"]);
$echo !== null || fail("/ws/echo refused: $status");
$echo->send('ping ' . $token);
($reply = $echo->text()) === 'ping ' . $token || fail("/ws/echo answered \"$reply\"");
$echo->close();
echo "/ws/echo: a message event went through the kernel (no 419) and came back\n";

[$status] = WebSocket::open($host, $port, '/ws/echo', ['Origin: http://evil.example']);
str_contains($status, ' 403 ') || fail("/ws/echo from a foreign origin: $status, expected 403");
[$status] = WebSocket::open($host, $port, '/ws/me');
str_contains($status, ' 302 ') || fail("/ws/me as a guest: $status, expected 302 (to the login page)");
echo "a foreign origin is refused (403), a guest is sent to the login page (302)\n";

[$status, $me] = WebSocket::open($host, $port, '/ws/me', ["Origin: http://$host:$port", $cookie($alice)]);
$me !== null || fail("/ws/me as alice refused: $status");
($hello = $me->text()) === '{"hello":"Alice"}' || fail("/ws/me greeted \"$hello\"");
$me->send('whoami');
($who = $me->text()) === '{"name":"Alice","id":1}' || fail("whoami answered \"$who\"");
$me->send('nonsense');
[$opcode, $payload] = $me->next();
($opcode === 0x8 && str_starts_with(WebSocket::closeText($payload), '1011 ')) || fail('expected a close with 1011 after the exception, got opcode ' . $opcode . ' ' . $payload);
$me->close();
echo "/ws/me: alice from the session, metadata kept; an exception closed it with " . WebSocket::closeText($payload) . "\n";

echo "OK\n";
