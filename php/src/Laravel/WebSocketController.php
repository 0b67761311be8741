<?php

declare(strict_types=1);

namespace Ws2fcgi\Laravel;

use Illuminate\Contracts\Container\Container;
use Illuminate\Http\Request;
use Symfony\Component\HttpFoundation\Response;
use Symfony\Component\HttpKernel\Exception\NotFoundHttpException;

/**
 * The route target of `Route::websocket()`: calls the handler's method for
 * the event {@see EventKernel} marked on the request.
 *
 * A plain HTTP request to the route (through a web server, not ws2fcgi)
 * carries no marker and gets 404. An exception in the handler propagates:
 * Laravel reports (logs) it and answers 500, which `EventKernel` turns into a
 * close with 1011 for a message and ws2fcgi into a refused handshake for an
 * open event.
 */
final class WebSocketController
{
    /** The route default that names the handler class. */
    public const HANDLER = 'ws2fcgiHandler';

    public function __construct(private readonly Container $container)
    {
    }

    public function __invoke(Request $request): Response
    {
        $event = $request->attributes->get(EventKernel::EVENT_ATTRIBUTE);
        if (! is_string($event) || ! in_array($event, EventKernel::RAW_EVENTS, true)) {
            throw new NotFoundHttpException();
        }
        $class = $request->route()?->defaults[self::HANDLER] ?? null;
        $handler = is_string($class) ? $this->container->make($class) : null;
        if (! $handler instanceof WebSocketHandler) {
            throw new \LogicException('ws2fcgi: Route::websocket() needs a class that implements ' . WebSocketHandler::class . ', not ' . var_export($class, true));
        }

        $result = match ($event) {
            'open' => $handler->onOpen($request),
            'message' => $handler->onMessage($request),
            'close' => $handler->onClose($request),
        };

        return self::answer($result);
    }

    /**
     * What a handler may return: null (accept, nothing to send), a string (the
     * reply: a message sent to this connection), or any Symfony/Laravel
     * response, whose status, `X-WS-*` directives and body ws2fcgi reads as
     * docs/protocol.md describes.
     */
    public static function answer(mixed $result): Response
    {
        if ($result === null) {
            return new Response('', 200);
        }
        if (is_string($result)) {
            return new Response($result, 200, ['Content-Type' => 'text/plain; charset=utf-8']);
        }
        if ($result instanceof Response) {
            return $result;
        }
        throw new \UnexpectedValueException('ws2fcgi: a WebSocket handler returned ' . get_debug_type($result) . '; expected null, a string or a response');
    }
}
