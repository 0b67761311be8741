<?php

// ws2fcgi's example handler (/usr/share/ws2fcgi/echo.php): says hello on
// open and sends every message back, binary as binary. Point `script` in
// /etc/ws2fcgi/ws2fcgi.toml at your application's handler instead.

declare(strict_types=1);

switch ($_SERVER['WS_EVENT'] ?? '') {
    case 'open':
        echo 'hello ' . $_SERVER['WS_CONNECTION_ID'];
        break;
    case 'message':
        if ($_SERVER['WS_MESSAGE_TYPE'] === 'binary') {
            header('Content-Type: application/octet-stream');
        }
        echo file_get_contents('php://input');
        break;
}
