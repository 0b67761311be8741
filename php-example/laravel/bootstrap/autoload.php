<?php

// Laravel 8 as Debian ships it (php-laravel-framework, under /usr/share/php),
// then Composer's autoloader for App\ and ws2fcgi (a path repository): nothing
// is downloaded. An app installed from Packagist needs only the second line.
require_once '/usr/share/php/Illuminate/autoload.php';
require_once __DIR__ . '/../vendor/autoload.php';
