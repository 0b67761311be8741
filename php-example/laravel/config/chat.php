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
    // Longest message a person may post, in characters.
    'max_message_length' => 2000,
];
