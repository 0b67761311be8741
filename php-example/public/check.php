<?php
// Why would the chat refuse this nickname? GET /check.php?room=&nick=
//
// Browsers hide the status and body of a refused WebSocket handshake (the
// page only sees close code 1006), so when /ws refuses, chat.js asks here and
// shows the answer. It runs the same check as ws.php's open event
// (Chat::admission); ws.php stays the authority, this only explains.
//
//   200 {"ok":true,"status":200,"error":null}
//   409 {"ok":false,"status":409,"error":"the nickname \"bob\" is taken in this room"}

declare(strict_types=1);

require __DIR__ . '/../lib/Chat.php';

use Chat\Chat;
use Chat\Rules;

header('Content-Type: application/json; charset=utf-8');
header('Cache-Control: no-store');

$room = is_string($_GET['room'] ?? null) ? $_GET['room'] : '';
$nick = Rules::normalizeNick(is_string($_GET['nick'] ?? null) ? $_GET['nick'] : '');

try {
    // The socket comes from WS_CONTROL_SOCKET (fastcgi_param or environment).
    $admission = Chat::admission(new Ws2fcgi\Client(), $room, $nick, Chat::owner($_COOKIE));
    $status = $admission['status'];
    $error = $admission['error'];
} catch (Ws2fcgi\Exception\Ws2fcgiException $e) {
    error_log('chat: check.php: ' . $e->getMessage());
    [$status, $error] = [503, 'the chat server is not reachable'];
}

http_response_code($status);
echo Chat::json(['ok' => $error === null, 'status' => $status, 'error' => $error]);
