<?php

// The example keeps no data (config/chat.php lists the people); artisan's
// commands need a connection to be configured, none is ever opened.
return [
    'default' => 'sqlite',
    'connections' => [
        'sqlite' => ['driver' => 'sqlite', 'database' => ':memory:', 'prefix' => ''],
    ],
    'migrations' => 'migrations',
];
