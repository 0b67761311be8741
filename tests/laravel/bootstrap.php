<?php

// The Laravel integration's unit tests run on Laravel 8 as Debian ships it
// (php-laravel-framework) and the package's sources, autoloaded as the root
// composer.json declares them (PSR-4 Ws2fcgi\ → php/src/).

declare(strict_types=1);

require_once '/usr/share/php/Illuminate/autoload.php';

spl_autoload_register(static function (string $class): void {
    if (str_starts_with($class, 'Ws2fcgi\\')) {
        $file = __DIR__ . '/../../php/src/' . str_replace('\\', '/', substr($class, 8)) . '.php';
        if (is_file($file)) {
            require $file;
        }
    }
});
