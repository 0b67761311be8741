<?php

declare(strict_types=1);

namespace Ws2fcgi\Laravel;

use Illuminate\Broadcasting\BroadcastManager;
use Illuminate\Routing\Router;
use Illuminate\Support\ServiceProvider;
use Ws2fcgi\Client;
use Ws2fcgi\ClientInterface;

/**
 * ws2fcgi in a Laravel app, found through composer.json's `extra.laravel`.
 *
 * - merges and publishes `config/ws2fcgi.php` (`vendor:publish --tag=ws2fcgi-config`)
 *   and the `ws.php` front controller (`--tag=ws2fcgi-front-controller`);
 * - binds the control socket client, `Ws2fcgi\ClientInterface` (and `Client`),
 *   one per app, its connection persistent per PHP-FPM worker;
 * - registers the `ws2fcgi` broadcast driver (`Broadcast::extend`);
 * - adds `Route::websocket($uri, Handler::class)` for raw WebSocket routes,
 *   served by the `ws.php` front controller ({@see EventKernel}).
 */
class Ws2fcgiServiceProvider extends ServiceProvider
{
    public const CONFIG = __DIR__ . '/config/ws2fcgi.php';

    /** The control socket when nothing names one: the Debian package's. */
    public const DEFAULT_CONTROL_SOCKET = '/run/ws2fcgi/control.sock';

    public function register()
    {
        $this->mergeConfigFrom(self::CONFIG, 'ws2fcgi');

        $this->app->singleton(ClientInterface::class, function ($app) {
            $config = $app['config']['ws2fcgi'];

            return new Client(self::controlSocket($config['control_socket'] ?? null), (float) ($config['timeout'] ?? 5.0));
        });
        $this->app->alias(ClientInterface::class, Client::class);
    }

    public function boot()
    {
        if ($this->app->runningInConsole()) {
            $this->publishes([self::CONFIG => $this->app->configPath('ws2fcgi.php')], 'ws2fcgi-config');
            // The front controller of WebSocket events, beside artisan (not in public/).
            $this->publishes([__DIR__ . '/stubs/ws.php' => $this->app->basePath('ws.php')], 'ws2fcgi-front-controller');
        }

        $this->callAfterResolving(BroadcastManager::class, function (BroadcastManager $manager) {
            $manager->extend('ws2fcgi', fn ($app, array $config) => $this->broadcaster($config));
        });

        Router::macro('websocket', function (string $uri, string $handler) {
            /** @var Router $this */
            return $this->match(['GET', 'POST'], $uri, WebSocketController::class)
                ->defaults(WebSocketController::HANDLER, $handler);
        });
    }

    /**
     * The configured socket, else `WS_CONTROL_SOCKET` (the request's: ws2fcgi
     * sets it on every event; then the environment's), else the Debian
     * package's path. Never throws: a wrong path fails at the first publish,
     * with the reason, not while the app boots.
     */
    private static function controlSocket(mixed $configured): string
    {
        foreach ([$configured, $_SERVER['WS_CONTROL_SOCKET'] ?? null, getenv('WS_CONTROL_SOCKET')] as $candidate) {
            if (is_string($candidate) && $candidate !== '') {
                return $candidate;
            }
        }

        return self::DEFAULT_CONTROL_SOCKET;
    }

    /**
     * The broadcaster of a `'driver' => 'ws2fcgi'` connection: its own
     * `app_id`, `key`, `secret` and `control_socket` win over config/ws2fcgi.php.
     *
     * @param  array<string, mixed>  $connection
     */
    private function broadcaster(array $connection): Ws2fcgiBroadcaster
    {
        $pusher = $this->app['config']['ws2fcgi.pusher'] ?? [];
        $setting = function (string $name) use ($connection, $pusher): string {
            $value = $connection[$name] ?? $pusher[$name] ?? null;
            if (! is_scalar($value) || (string) $value === '') {
                throw new \InvalidArgumentException(
                    "ws2fcgi: the broadcast connection needs the Pusher app's {$name} "
                    . "(config/ws2fcgi.php 'pusher.{$name}', or '{$name}' in the connection)"
                );
            }

            return (string) $value;
        };

        $client = $this->app->make(ClientInterface::class);
        $socket = $connection['control_socket'] ?? null;
        if (is_string($socket) && $socket !== '') {
            $client = new Client($socket, (float) ($this->app['config']['ws2fcgi.timeout'] ?? 5.0));
        }

        $masterKey = $connection['encryption_master_key_base64'] ?? $pusher['encryption_master_key_base64'] ?? null;
        $encryption = is_string($masterKey) && $masterKey !== '' ? new PusherEncryption($masterKey) : null;

        return new Ws2fcgiBroadcaster($client, $setting('app_id'), $setting('key'), $setting('secret'), $encryption);
    }
}
