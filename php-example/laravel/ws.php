<?php

// ws2fcgi's events (the Pusher app's `script`): php/src/Laravel/stubs/ws.php,
// with Debian's autoloader. Kept outside public/, so no web server serves it.

define('LARAVEL_START', microtime(true));

require __DIR__ . '/bootstrap/autoload.php';

$app = require_once __DIR__ . '/bootstrap/app.php';

Ws2fcgi\Laravel\EventKernel::serve($app);
