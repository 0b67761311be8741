<?php

// ws2fcgi for Laravel: publish with `php artisan vendor:publish --tag=ws2fcgi-config`.
// docs/frameworks.md ("Laravel") explains every key.

return [

    // The daemon's control socket (`control.socket` in ws2fcgi.toml). When
    // null: WS_CONTROL_SOCKET from the request (ws2fcgi sets it on every
    // event; a web server may pass it too) or the environment, else
    // /run/ws2fcgi/control.sock (the Debian package's).
    'control_socket' => env('WS2FCGI_CONTROL_SOCKET'),

    // Seconds to connect, and to write a request and read its reply.
    'timeout' => (float) env('WS2FCGI_TIMEOUT', 5.0),

    // The [[pusher.app]] of ws2fcgi.toml that Echo connects to: broadcast()
    // publishes to it, /broadcasting/auth signs with its key and secret.
    'pusher' => [
        'app_id' => env('WS2FCGI_PUSHER_APP_ID', env('PUSHER_APP_ID')),
        'key' => env('WS2FCGI_PUSHER_APP_KEY', env('PUSHER_APP_KEY')),
        'secret' => env('WS2FCGI_PUSHER_APP_SECRET', env('PUSHER_APP_SECRET')),
        // private-encrypted- channels: 32 bytes, base64 (openssl rand -base64 32).
        // Only Laravel and the browsers hold it; ws2fcgi relays ciphertext.
        'encryption_master_key_base64' => env('WS2FCGI_PUSHER_ENCRYPTION_MASTER_KEY_BASE64', env('PUSHER_ENCRYPTION_MASTER_KEY_BASE64')),
    ],

    // Raw WebSocket routes (Route::websocket): origins whose pages may open a
    // connection with the user's cookies. Empty: only the app's own origin
    // (the handshake's Host, with the scheme the browser used). A WebSocket
    // event skips the CSRF check, so this check takes its place.
    'allowed_origins' => array_filter(explode(',', (string) env('WS2FCGI_ALLOWED_ORIGINS', ''))),

    // auth = "php": the route a Pusher `subscribe` event is run through, with
    // the app's middleware, as if Echo had asked for it. Broadcast::routes()
    // registers it.
    'auth_path' => '/broadcasting/auth',
];
