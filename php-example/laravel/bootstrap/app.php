<?php

$app = new Illuminate\Foundation\Application(dirname(__DIR__));

// scripts/laravel keeps the .env, the storage and the caches in its run
// directory, so that the checkout stays read-only at run time.
if (is_string($dir = $_SERVER['LARAVEL_RUN_DIR'] ?? getenv('LARAVEL_RUN_DIR')) && $dir !== '') {
    $app->useEnvironmentPath($dir);
    $app->useStoragePath($dir . '/storage');
    // Laravel's bootstrap/cache files (package manifest, ...) go there too.
    foreach (['PACKAGES' => 'packages', 'SERVICES' => 'services', 'CONFIG' => 'config', 'ROUTES' => 'routes-v7', 'EVENTS' => 'events'] as $name => $file) {
        $_SERVER['APP_' . $name . '_CACHE'] ??= $dir . '/cache/' . $file . '.php';
    }
}

$app->singleton(Illuminate\Contracts\Http\Kernel::class, App\Http\Kernel::class);
$app->singleton(Illuminate\Contracts\Console\Kernel::class, Illuminate\Foundation\Console\Kernel::class);
$app->singleton(Illuminate\Contracts\Debug\ExceptionHandler::class, App\Exceptions\Handler::class);

return $app;
