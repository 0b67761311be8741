<?php

// The handler of the ws2fcgi.js tests (tests/js/*.test.mjs).
//
//   open     ?refuse=STATUS refuses the handshake with that status (and
//            Retry-After: ?retry_after= when given); otherwise joins the
//            channels of ?join=a,b.
//   message  "close CODE REASON" closes the connection with X-WS-Close;
//            anything else is echoed to this connection, binary as binary.

declare(strict_types=1);

switch ($_SERVER['WS_EVENT']) {
    case 'open':
        if (isset($_GET['refuse'])) {
            http_response_code((int) $_GET['refuse']);
            if (isset($_GET['retry_after'])) {
                header('Retry-After: ' . (int) $_GET['retry_after']);
            }
            echo "refused\n";
            break;
        }
        if (($_GET['join'] ?? '') !== '') {
            header('X-WS-Join: ' . $_GET['join']);
        }
        break;
    case 'message':
        $body = (string) file_get_contents('php://input');
        if ($_SERVER['WS_MESSAGE_TYPE'] === 'text' && str_starts_with($body, 'close ')) {
            header('X-WS-Close: ' . substr($body, 6));
            break;
        }
        if ($_SERVER['WS_MESSAGE_TYPE'] === 'binary') {
            header('Content-Type: application/octet-stream');
        }
        echo $body;
        break;
}
