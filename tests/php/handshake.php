<?php
// The open answer decides the handshake.
//   ?mode=reject  403, a cookie, a body (and a directive that must not leak)
//   ?mode=accept  picks the subprotocol chat.v2 when the client offers it, sets a cookie
if ($_SERVER['WS_EVENT'] !== 'open') {
    exit;
}
if (($_GET['mode'] ?? '') === 'reject') {
    http_response_code(403);
    setcookie('denied', 'yes');
    header('X-WS-Meta-Rejected: 1');
    echo 'members only';
    exit;
}
$offered = array_map('trim', explode(',', $_SERVER['HTTP_SEC_WEBSOCKET_PROTOCOL'] ?? ''));
if (in_array('chat.v2', $offered, true)) {
    header('Sec-WebSocket-Protocol: chat.v2');
}
setcookie('seen', 'once');
echo 'welcome';
