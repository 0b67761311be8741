<?php
// Echoes every message back byte for byte (binary as binary); says hello on open.
require __DIR__ . '/record.php';
record_event();
switch ($_SERVER['WS_EVENT']) {
    case 'open':
        echo "hello " . $_SERVER['WS_CONNECTION_ID'];
        break;
    case 'message':
        if ($_SERVER['WS_MESSAGE_TYPE'] === 'binary') {
            header('Content-Type: application/octet-stream');
        }
        echo file_get_contents('php://input');
        break;
}
