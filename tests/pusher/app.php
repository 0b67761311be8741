<?php

// The raw contract's handler beside the Pusher endpoint (tests/pusher).
//
//   "pusher CHANNEL TEXT"  publishes the Pusher event `from-php` {"text": TEXT}
//                          to CHANNEL of app 1001 with the PHP client, and
//                          answers "published N" (N: connections it reached)
//   anything else          is echoed back, prefixed with "echo:"

declare(strict_types=1);

require __DIR__ . '/../../php/Ws2fcgi.php';

if ($_SERVER['WS_EVENT'] === 'message') {
    $body = (string) file_get_contents('php://input');
    if (preg_match('/^pusher (\S+) (.*)$/s', $body, $m) === 1) {
        $delivered = (new Ws2fcgi\Client())->pusherPublish('1001', $m[1], 'from-php', ['text' => $m[2]]);
        echo "published $delivered";
    } else {
        echo 'echo:' . $body;
    }
}
