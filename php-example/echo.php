<?php
// The smallest ws2fcgi handler: greet the client on open, echo every message.
//
// ws2fcgi sends each WebSocket event to this script as one FastCGI request;
// $_SERVER['WS_EVENT'] says which. Whatever the script prints is sent back to
// this connection as one message. See docs/protocol.md.

switch ($_SERVER['WS_EVENT']) {
    case 'open':
        // A 2xx answer (the default) accepts the handshake; this body is the
        // first message the client receives.
        echo "hello, you are connection {$_SERVER['WS_CONNECTION_ID']}";
        break;

    case 'message':
        // The message is the request body, byte-exact.
        if ($_SERVER['WS_MESSAGE_TYPE'] === 'binary') {
            // Send the echo as a binary message too.
            header('Content-Type: application/octet-stream');
        }
        echo file_get_contents('php://input');
        break;

    case 'close':
        // The connection is gone; nothing printed here reaches the client.
        break;
}
