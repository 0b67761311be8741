<?php

return [
    'defaults' => ['guard' => 'web', 'passwords' => 'users'],
    'guards' => [
        'web' => ['driver' => 'session', 'provider' => 'users'],
    ],
    'providers' => [
        // A fixed list of people (config/chat.php), no database: see
        // App\Auth\FixedUserProvider.
        'users' => ['driver' => 'fixed'],
    ],
];
