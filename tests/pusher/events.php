<?php

// Events to PHP of the Pusher app in tests/pusher/events.test.mjs (the
// app's `script`, with `auth = "php"`). The test includes it from a small
// file that defines EVENTS_LOG, where every event is appended as one JSON
// line, so the test sees what PHP saw and in which order.
//
// The "session" is the handshake's cookie `user=<id>`; `deny=1` refuses;
// `hold=<path>` holds the open until that file exists.
//
//   open          403 when the cookie has deny=1; else 2xx, X-WS-Meta-User
//   subscribe     private-deny-*: 403; presence-badjson-*: 200 "not json";
//                 presence-*: {"user_id": <cookie user>, "user_info": {"name": "User <id>"}};
//                 else 204
//   client_event  client-refused: 403; else 204
//   the others    logged only

declare(strict_types=1);

$server = $_SERVER;
parse_str(strtr($server['HTTP_COOKIE'] ?? '', ['; ' => '&']), $cookies);
$event = $server['WS_EVENT'] ?? '';
$line = [
    'event' => $event,
    'conn' => $server['WS_CONNECTION_ID'] ?? null,
    'app' => $server['WS_PUSHER_APP_ID'] ?? null,
    'socket' => $server['WS_PUSHER_SOCKET_ID'] ?? null,
    'channel' => $server['WS_PUSHER_CHANNEL'] ?? null,
    'name' => $server['WS_PUSHER_EVENT'] ?? null,
    'user' => $server['WS_PUSHER_USER_ID'] ?? null,
    'code' => $server['WS_CLOSE_CODE'] ?? null,
    'reason' => $server['WS_CLOSE_REASON'] ?? null,
    'meta' => $server['WS_META_USER'] ?? null,
    'cookie' => $server['HTTP_COOKIE'] ?? null,
    'uri' => $server['REQUEST_URI'] ?? null,
    'remote' => $server['REMOTE_ADDR'] ?? null,
    'method' => $server['REQUEST_METHOD'] ?? null,
    'control' => $server['WS_CONTROL_SOCKET'] ?? null,
    'script' => $server['SCRIPT_FILENAME'] ?? null,
    'body' => (string) file_get_contents('php://input'),
];
file_put_contents(EVENTS_LOG, json_encode($line) . "\n", FILE_APPEND | LOCK_EX);

$user = (string) ($cookies['user'] ?? '');
switch ($event) {
    case 'open':
        // hold=<path>: the open waits (at most 20 s) until that file exists.
        for ($i = 0; isset($cookies['hold']) && $i < 2000 && !file_exists((string) $cookies['hold']); $i++) {
            usleep(10000);
        }
        if (($cookies['deny'] ?? '') === '1') {
            http_response_code(403);
            exit;
        }
        header('X-WS-Meta-User: ' . $user);
        header('Set-Cookie: seen=1; Path=/');
        break;
    case 'subscribe':
        $channel = (string) $server['WS_PUSHER_CHANNEL'];
        if (str_starts_with($channel, 'private-deny-')) {
            http_response_code(403);
        } elseif (str_starts_with($channel, 'presence-badjson-')) {
            echo 'not json';
        } elseif (str_starts_with($channel, 'presence-')) {
            header('Content-Type: application/json');
            echo json_encode(['user_id' => $user, 'user_info' => ['name' => "User $user"]]);
        } else {
            http_response_code(204);
        }
        break;
    case 'client_event':
        http_response_code($server['WS_PUSHER_EVENT'] === 'client-refused' ? 403 : 204);
        break;
}
