<?php

// The raw contract's handler beside the Pusher endpoint (tests/pusher):
// every message is echoed back to its connection, prefixed with "echo:".

declare(strict_types=1);

if ($_SERVER['WS_EVENT'] === 'message') {
    echo 'echo:' . file_get_contents('php://input');
}
