<?php
// The app's one front controller, for its pages (php -S in the test, nginx
// and php-fpm in production) and for ws2fcgi's events (--script points
// here): every request, WebSocket event or not, goes through the kernel.

declare(strict_types=1);

use App\Kernel;
use Symfony\Component\HttpFoundation\Request;

// Symfony from Debian's packages (php-symfony-framework-bundle), the app and
// ws2fcgi/ws2fcgi from Composer.
require '/usr/share/php/Symfony/Bundle/FrameworkBundle/autoload.php';
require dirname(__DIR__) . '/vendor/autoload.php';

$kernel = new Kernel('prod', false);
$request = Request::createFromGlobals();
$response = $kernel->handle($request);
$response->send();
$kernel->terminate($request, $response);
