<?php

/**
 * ws2fcgi's PHP package for code that does not use Composer: require this
 * file and every `Ws2fcgi\...` class of src/ loads on first use.
 *
 *     require '/path/to/ws2fcgi/php/Ws2fcgi.php';
 *     $ws = new Ws2fcgi\Client();
 *
 * It registers an autoloader for the `Ws2fcgi\` namespace mapped onto the
 * src/ directory beside it (PSR-4, as the root composer.json declares), so
 * keep src/ next to this file when you copy it. With Composer, require
 * `ws2fcgi/ws2fcgi` instead and do not include this file.
 *
 * @license MIT
 */

declare(strict_types=1);

(static function (): void {
    $base = __DIR__ . '/src/';
    // Requiring this file twice, or beside Composer's autoloader, is harmless:
    // a class that is already loaded is never looked up again.
    \spl_autoload_register(static function (string $class) use ($base): void {
        if (!\str_starts_with($class, 'Ws2fcgi\\')) {
            return;
        }
        $file = $base . \str_replace('\\', '/', \substr($class, \strlen('Ws2fcgi\\'))) . '.php';
        if (\is_file($file)) {
            require $file;
        }
    });
})();
