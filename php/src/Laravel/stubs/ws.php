<?php

// ws2fcgi's front controller for Laravel: copy it to your app's root (beside
// artisan, NOT into public/) and name it as ws2fcgi's `script` (or a
// [[route]]'s, or a [[pusher.app]]'s). Every WebSocket event is then run
// through the HTTP kernel: docs/frameworks.md, "Laravel".

define('LARAVEL_START', microtime(true));

require __DIR__ . '/vendor/autoload.php';

$app = require_once __DIR__ . '/bootstrap/app.php';

Ws2fcgi\Laravel\EventKernel::serve($app);
