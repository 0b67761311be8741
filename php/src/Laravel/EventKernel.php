<?php

declare(strict_types=1);

namespace Ws2fcgi\Laravel;

use Illuminate\Contracts\Foundation\Application;
use Illuminate\Contracts\Http\Kernel as HttpKernel;
use Illuminate\Foundation\Http\Middleware\VerifyCsrfToken;
use Illuminate\Http\Request;
use Illuminate\Support\Str;
use Symfony\Component\HttpFoundation\Response;
use Ws2fcgi\Event;
use Ws2fcgi\Exception\InvalidEventException;

/**
 * The front controller of WebSocket events (`ws.php`): runs each FastCGI
 * request ws2fcgi sends through the app's HTTP kernel, so that the session,
 * the auth guard and the app's middleware see it as any other request.
 *
 * ```text
 * raw endpoint (Route::websocket)      WS_EVENT      runs as
 *   open                               open          GET  <handshake URI>   → 2xx accepts, else refuses
 *   message                            message       POST <handshake URI>   → 2xx replies; else closed 1008/1011
 *   close                              close         GET  <handshake URI>   → answer ignored
 * Pusher app (WS_PUSHER_APP_ID set) with auth = "php"
 *   subscribe (private-, presence-)    subscribe     POST <auth_path>        → 2xx (+ presence member) or 403
 *   open, client_event, close, member_added, member_removed, channel_occupied, channel_vacated
 *                                      accepted (200) as they are, the app not booted
 * ```
 *
 * The app's CSRF middleware is replaced by {@see SkipCsrfForWebSocketEvent}
 * for these requests only; the open event's `Origin` is checked instead.
 */
final class EventKernel
{
    /**
     * The request attribute that marks a WebSocket event: the `Ws2fcgi\Event`
     * of a raw one, `'subscribe'` on the request a Pusher subscribe event is run as.
     */
    public const EVENT_ATTRIBUTE = 'ws2fcgi.event';

    /** The raw contract's events, run through the handshake URI's route. */
    public const RAW_EVENTS = ['open', 'message', 'close'];

    public function __construct(private readonly Application $app)
    {
    }

    /**
     * Answers the current FastCGI request: what `ws.php` calls.
     */
    public static function serve(Application $app): void
    {
        (new self($app))->run(Request::capture());
    }

    public function run(Request $request): void
    {
        $kernel = $this->app->make(HttpKernel::class);
        [$handled, $response] = $this->handle($kernel, $request);
        $response->send();
        $kernel->terminate($handled, $response);
    }

    /**
     * @return array{0: Request, 1: Response} the request the kernel handled (for
     *                                        terminate) and the answer to send
     */
    public function handle(HttpKernel $kernel, Request $request): array
    {
        $event = $request->server->get('WS_EVENT');
        if (! is_string($event) || $event === '') {
            // Reached through a web server, not ws2fcgi: nothing to answer.
            return [$request, new Response("ws.php answers ws2fcgi's WebSocket events only\n", 404, ['Content-Type' => 'text/plain'])];
        }
        $pusher = $request->server->has('WS_PUSHER_APP_ID');
        if ($pusher && $event !== 'subscribe') {
            // A Pusher connection's other events (open, client_event, close,
            // member_added ...): accepted as they are, without booting the app.
            return [$request, new Response('', 200)];
        }

        // As the HTTP kernel's handle() does before it boots: providers may
        // ask for the request while booting.
        $this->app->instance('request', $request);
        $kernel->bootstrap();
        $this->skipCsrf($kernel);
        $this->readOnlySession();

        if ($pusher) {
            return PusherSubscribe::handle($this->app, $kernel, $request);
        }
        if (! in_array($event, self::RAW_EVENTS, true)) {
            // An event this version does not know (a newer daemon): accepted, nothing done.
            $this->app['log']->notice('ws2fcgi: an event this package does not handle was accepted unchanged', ['event' => $event]);

            return [$request, new Response('', 200)];
        }

        if ($event === 'open' && ! $this->originAllowed($request)) {
            $this->app['log']->warning('ws2fcgi: WebSocket handshake from a foreign origin refused', [
                'origin' => $request->headers->get('Origin'),
                'uri' => $request->getRequestUri(),
            ]);

            return [$request, new Response("this origin may not open a WebSocket here\n", 403, ['Content-Type' => 'text/plain'])];
        }

        try {
            $request->attributes->set(self::EVENT_ATTRIBUTE, Event::fromArray($request->server->all(), (string) $request->getContent()));
        } catch (InvalidEventException $e) {
            $this->app['log']->error($e->getMessage(), ['event' => $event]);

            return [$request, new Response($e->getMessage() . "\n", 400, ['Content-Type' => 'text/plain'])];
        }
        $response = $kernel->handle($request);

        if ($event === 'message' && ! $response->isSuccessful()) {
            $response = $this->closeAfterFailure($request, $response);
        }

        return [$request, $response];
    }

    /**
     * A message answered outside 2xx would be dropped by the daemon with only a
     * log line; the client is told instead: close 1011 after a server error,
     * 1008 (policy violation) after a refusal (401, 403, 419, a redirect to the
     * login page ...).
     */
    private function closeAfterFailure(Request $request, Response $failed): Response
    {
        $status = $failed->getStatusCode();
        $code = $status >= 500 ? 1011 : 1008;
        $this->app['log']->error('ws2fcgi: WebSocket message event failed; closing the connection', [
            'status' => $status,
            'close_code' => $code,
            'uri' => $request->getRequestUri(),
            'connection' => $request->server->get('WS_CONNECTION_ID'),
        ]);

        return new Response('', 200, ['X-WS-Close' => $code . ' ' . ($status >= 500 ? 'server error' : 'refused') . ' (' . $status . ')']);
    }

    /**
     * A browser's handshake must come from the app's own origin or one of
     * `ws2fcgi.allowed_origins`; a client that sends no Origin is no browser
     * and is let through (as ws2fcgi's `allowed_origins` does).
     */
    private function originAllowed(Request $request): bool
    {
        $origin = $request->headers->get('Origin');
        if ($origin === null || $origin === '') {
            return true;
        }
        $allowed = (array) ($this->app['config']['ws2fcgi.allowed_origins'] ?? []);
        $allowed[] = $request->getSchemeAndHttpHost();
        foreach ($allowed as $candidate) {
            if (is_string($candidate) && strcasecmp(rtrim($candidate, '/'), $origin) === 0) {
                return true;
            }
        }

        return false;
    }

    /**
     * Wraps the session store's handler in {@see ReadOnlySessionHandler} once
     * the session manager exists (StartSession asks for it).
     */
    private function readOnlySession(): void
    {
        $this->app->afterResolving('session', function ($manager): void {
            $store = $manager->driver();
            // Store keeps its handler in a protected property with no setter
            // before Laravel 10; a closure bound to the store replaces it.
            (function (): void {
                if (! $this->handler instanceof ReadOnlySessionHandler) {
                    $this->handler = new ReadOnlySessionHandler($this->handler);
                }
            })->call($store);
        });
    }

    /**
     * Binds every CSRF middleware class the kernel names (the `web` group's
     * VerifyCsrfToken, Laravel 11's ValidateCsrfToken, aliases) to
     * {@see SkipCsrfForWebSocketEvent}, in this PHP request only.
     */
    private function skipCsrf(HttpKernel $kernel): void
    {
        $names = [VerifyCsrfToken::class];
        if (method_exists($kernel, 'getMiddlewareGroups')) {
            foreach ($kernel->getMiddlewareGroups() as $group) {
                array_push($names, ...array_values((array) $group));
            }
        }
        foreach (['getMiddlewareAliases', 'getRouteMiddleware', 'getGlobalMiddleware'] as $method) {
            if (method_exists($kernel, $method)) {
                array_push($names, ...array_values((array) $kernel->{$method}()));
            }
        }
        foreach (array_unique($names) as $name) {
            $class = is_string($name) ? Str::before($name, ':') : null;
            if ($class !== null && class_exists($class) && is_a($class, VerifyCsrfToken::class, true)) {
                $this->app->bind($class, SkipCsrfForWebSocketEvent::class);
            }
        }
    }
}
