<?php

declare(strict_types=1);

namespace Ws2fcgi\Symfony;

use Symfony\Component\EventDispatcher\EventSubscriberInterface;
use Symfony\Component\HttpKernel\Event\ExceptionEvent;
use Symfony\Component\HttpKernel\Event\ViewEvent;
use Symfony\Component\HttpKernel\KernelEvents;
use Ws2fcgi\EventKind;
use Ws2fcgi\Response;

/**
 * The kernel listeners of the integration:
 *
 * - kernel.view: a controller that returns a Ws2fcgi\Response gets it
 *   turned into Symfony's (ResponseConverter).
 * - kernel.exception: an exception thrown while handling a message event
 *   closes the connection with 1011 "internal error" after Symfony has
 *   logged it. Without this the answer would be Symfony's 500 page, which
 *   ws2fcgi discards with a warning while the client, told nothing, waits.
 *   An exception in an open event stays Symfony's error response: the
 *   handshake is refused with that status. The answers to close events are
 *   discarded anyway.
 *
 * Register it as a service tagged `kernel.event_subscriber` (autoconfigure
 * does that).
 */
final class Ws2fcgiSubscriber implements EventSubscriberInterface
{
    /** The close code of a message event whose controller threw. */
    public const ERROR_CLOSE_CODE = 1011;

    /** @return array<string, array{0: string, 1: int}> */
    public static function getSubscribedEvents(): array
    {
        return [
            KernelEvents::VIEW => ['onView', 0],
            // After Symfony's ErrorListener logged the exception (priority 0),
            // before it renders its error page (-128).
            KernelEvents::EXCEPTION => ['onException', -64],
        ];
    }

    public function onView(ViewEvent $event): void
    {
        $result = $event->getControllerResult();
        if ($result instanceof Response) {
            $event->setResponse(ResponseConverter::toSymfony($result));
        }
    }

    public function onException(ExceptionEvent $event): void
    {
        $request = $event->getRequest();
        if (!$request->server->has('WS_EVENT')) {
            return;
        }
        if ($request->server->get('WS_EVENT') !== EventKind::Message->value) {
            return;
        }
        $close = Response::accept()->close(self::ERROR_CLOSE_CODE, 'internal error');
        // A 2xx on purpose: ws2fcgi applies directives of 2xx answers only.
        $event->allowCustomResponseCode();
        $event->setResponse(ResponseConverter::toSymfony($close));
    }
}
