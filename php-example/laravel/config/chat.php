<?php

// The people who may log in, and the rooms each may enter. Passwords are
// bcrypt hashes of "secret" (password_hash('secret', PASSWORD_BCRYPT)).

$secret = '$2y$10$5pOMAiGpgOdb2p.FfoOqt.7C1XKfG2gzscalad9I4fO.FUFJVIk4q';

return [
    'users' => [
        1 => ['name' => 'Alice', 'email' => 'alice@example.com', 'password' => $secret, 'rooms' => ['lobby', 'staff']],
        2 => ['name' => 'Bob', 'email' => 'bob@example.com', 'password' => $secret, 'rooms' => ['lobby', 'staff']],
        3 => ['name' => 'Carol', 'email' => 'carol@example.com', 'password' => $secret, 'rooms' => ['lobby']],
    ],
    // How Echo's private and presence channels are authorized:
    // "php": ws2fcgi's Pusher app has auth = "php" and asks ws.php, which runs
    //        routes/channels.php with the session's user: no request from the page;
    // "endpoint": the page asks /broadcasting/auth for Pusher's signature, as
    //        with Pusher itself (ws2fcgi checks it).
    'channel_auth' => env('CHAT_CHANNEL_AUTH', 'php'),
    // Longest message a person may post, in characters.
    'max_message_length' => 2000,
];
