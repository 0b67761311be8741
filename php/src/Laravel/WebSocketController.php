<?php

declare(strict_types=1);

namespace Ws2fcgi\Laravel;

use Illuminate\Contracts\Container\Container;
use Illuminate\Http\Request;
use Symfony\Component\HttpFoundation\Response as HttpResponse;
use Symfony\Component\HttpKernel\Exception\NotFoundHttpException;
use Ws2fcgi\Event;
use Ws2fcgi\EventKind;
use Ws2fcgi\Response;

/**
 * The route target of `Route::websocket()`: calls the handler's method for
 * the event {@see EventKernel} put on the request.
 *
 * A plain HTTP request to the route (through a web server, not ws2fcgi)
 * carries no event and gets 404. An exception in the handler propagates:
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

    public function __invoke(Request $request): HttpResponse
    {
        $event = $request->attributes->get(EventKernel::EVENT_ATTRIBUTE);
        if (! $event instanceof Event) {
            throw new NotFoundHttpException();
        }
        $class = $request->route()?->defaults[self::HANDLER] ?? null;
        $handler = is_string($class) ? $this->container->make($class) : null;
        if (! $handler instanceof WebSocketHandler) {
            throw new \LogicException('ws2fcgi: Route::websocket() needs a class that implements ' . WebSocketHandler::class . ', not ' . var_export($class, true));
        }

        $answer = match ($event->kind) {
            EventKind::Open => $handler->onOpen($event, $request),
            EventKind::Message => $handler->onMessage($event, $request),
            EventKind::Close => $handler->onClose($event, $request),
            default => throw new NotFoundHttpException(),
        };

        return self::toHttp($answer);
    }

    /**
     * The handler's answer as the HTTP response the kernel sends. A
     * `Set-Cookie` goes through Symfony's cookie parser on the way, which
     * gives a cookie without a path `path=/`.
     */
    public static function toHttp(Response|HttpResponse|null $answer): HttpResponse
    {
        if ($answer === null) {
            return new HttpResponse('', 200);
        }
        if ($answer instanceof HttpResponse) {
            return $answer;
        }
        $parts = $answer->toArray();

        return new HttpResponse($parts['body'], $parts['status'], $parts['headers']);
    }
}
