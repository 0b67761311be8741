<?php
// The package's classes through php/Ws2fcgi.php (its autoloader for php/src/),
// PHPUnit's own from Debian's /usr/share/php.

declare(strict_types=1);

error_reporting(E_ALL);
require __DIR__ . '/../../php/Ws2fcgi.php';
