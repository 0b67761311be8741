<?php
// The package's classes through php/Ws2fcgi.php (its autoloader for php/src/),
// Symfony's from Debian's php-symfony-* packages (for Ws2fcgi\Symfony), PHPUnit's
// own from Debian's /usr/share/php.

declare(strict_types=1);

error_reporting(E_ALL);
require __DIR__ . '/../../php/Ws2fcgi.php';
require '/usr/share/php/Symfony/Component/HttpKernel/autoload.php';
