<?php

declare(strict_types=1);

namespace Ws2fcgi\Symfony;

use Symfony\Component\HttpFoundation\Request;
use Symfony\Component\HttpKernel\ControllerMetadata\ArgumentMetadata;
use Symfony\Component\HttpKernel\Exception\BadRequestHttpException;
use Ws2fcgi\Event;
use Ws2fcgi\Exception\InvalidEventException;

/**
 * Gives a controller the ws2fcgi event of the request it handles:
 *
 *     public function __invoke(Ws2fcgi\Event $event, Request $request): Ws2fcgi\Response
 *
 * The event comes from the request's CGI variables (the server bag) and its
 * body. A request that is not an event (a browser reaching the route over
 * plain HTTP) gets 400, or null for an argument typed `?Event`.
 *
 * Register it as a service tagged `controller.argument_value_resolver`
 * (docs/frameworks.md). The event is also kept in the request attribute
 * `_ws2fcgi_event` (see self::ATTRIBUTE) for listeners.
 */
final class EventValueResolver implements ValueResolver
{
    /** The request attribute holding the resolved Event. */
    public const ATTRIBUTE = '_ws2fcgi_event';

    /** Whether this resolver answers for the argument: one typed Ws2fcgi\Event (Symfony < 6.2). */
    public function supports(Request $request, ArgumentMetadata $argument): bool
    {
        return $argument->getType() === Event::class;
    }

    /**
     * @return iterable<Event|null>
     *
     * @throws BadRequestHttpException when the request is not a ws2fcgi event and the argument is not nullable
     */
    public function resolve(Request $request, ArgumentMetadata $argument): iterable
    {
        if (!$this->supports($request, $argument)) {
            return [];
        }
        $event = self::event($request);
        if ($event === null) {
            if ($argument->isNullable()) {
                return [null];
            }
            throw new BadRequestHttpException('this route answers ws2fcgi WebSocket events only');
        }
        return [$event];
    }

    /**
     * The request's event, or null when the request is not a ws2fcgi event.
     * Read once per request, then kept in its attributes.
     */
    public static function event(Request $request): ?Event
    {
        $kept = $request->attributes->get(self::ATTRIBUTE);
        if ($kept instanceof Event) {
            return $kept;
        }
        if (!$request->server->has('WS_EVENT')) {
            return null;
        }
        try {
            $event = Event::fromArray($request->server->all(), (string) $request->getContent());
        } catch (InvalidEventException $e) {
            throw new BadRequestHttpException($e->getMessage(), $e);
        }
        $request->attributes->set(self::ATTRIBUTE, $event);
        return $event;
    }
}
