<?php
// For tests/deflate.rs: joins "room" and says hello on open; echoes every
// message back (binary as binary), so the answer is compressed like any
// message to a client that negotiated permessage-deflate.
declare(strict_types=1);

switch ($_SERVER['WS_EVENT']) {
    case 'open':
        header('X-WS-Join: room');
        echo 'hello';
        break;
    case 'message':
        if ($_SERVER['WS_MESSAGE_TYPE'] === 'binary') {
            header('Content-Type: application/octet-stream');
        }
        echo file_get_contents('php://input');
        break;
}
