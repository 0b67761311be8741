<?php

return [
    'default' => env('BROADCAST_DRIVER', 'ws2fcgi'),

    'connections' => [
        // broadcast() through ws2fcgi's control socket to its Pusher app
        // (app id, key and secret from config/ws2fcgi.php, i.e. PUSHER_APP_*).
        'ws2fcgi' => [
            'driver' => 'ws2fcgi',
        ],
        'log' => ['driver' => 'log'],
        'null' => ['driver' => 'null'],
    ],
];
