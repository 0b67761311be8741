<?php

declare(strict_types=1);

namespace Ws2fcgi\Symfony;

use Psr\Log\LoggerInterface;
use Symfony\Component\EventDispatcher\EventSubscriberInterface;
use Symfony\Component\HttpKernel\Event\ResponseEvent;
use Symfony\Component\HttpKernel\Event\ViewEvent;
use Symfony\Component\HttpKernel\KernelEvents;
use Ws2fcgi\EventKind;
use Ws2fcgi\Response;

/**
 * The kernel listeners of the integration:
 *
 * - kernel.view: a controller that returns a Ws2fcgi\Response gets it
 *   turned into Symfony's (ResponseConverter).
 * - kernel.response: a message event answered outside 2xx (an exception
 *   Symfony turned into its 500 page, an AccessDeniedHttpException's 403, a
 *   redirect) becomes a 200 that closes the connection: `X-WS-Close: 1011
 *   server error (<status>)` for a 5xx, `1008 refused (<status>)` otherwise,
 *   logged as a warning with the connection id. ws2fcgi would discard the
 *   non-2xx answer with only a log line, and the client, told nothing,
 *   would wait for a reply. Answers to open events keep their status (a
 *   refusal of the handshake); those to close events are discarded anyway.
 *
 * Register it as a service with autoconfigure (or tag it
 * `kernel.event_subscriber`); the logger is autowired when there is one.
 */
final class Ws2fcgiSubscriber implements EventSubscriberInterface
{
    /** The close code of a message event answered with a 5xx. */
    public const ERROR_CLOSE_CODE = 1011;

    /** The close code of a message event answered with another non-2xx status. */
    public const REFUSED_CLOSE_CODE = 1008;

    public function __construct(private readonly ?LoggerInterface $logger = null)
    {
    }

    /** @return array<string, array{0: string, 1: int}> */
    public static function getSubscribedEvents(): array
    {
        return [
            KernelEvents::VIEW => ['onView', 0],
            // Last, so that it sees the status every other listener settled on.
            KernelEvents::RESPONSE => ['onResponse', -1024],
        ];
    }

    public function onView(ViewEvent $event): void
    {
        $result = $event->getControllerResult();
        if ($result instanceof Response) {
            $event->setResponse(ResponseConverter::toSymfony($result));
        }
    }

    public function onResponse(ResponseEvent $event): void
    {
        $request = $event->getRequest();
        if (!$event->isMainRequest() || $request->server->get('WS_EVENT') !== EventKind::Message->value) {
            return;
        }
        $status = $event->getResponse()->getStatusCode();
        if ($status >= 200 && $status < 300) {
            return;
        }
        $close = $status >= 500
            ? Response::accept()->close(self::ERROR_CLOSE_CODE, "server error ($status)")
            : Response::accept()->close(self::REFUSED_CLOSE_CODE, "refused ($status)");
        $this->logger?->warning('ws2fcgi: a message event was answered with {status}; connection {connection} closed', [
            'status' => $status,
            'connection' => $request->server->get('WS_CONNECTION_ID'),
        ]);
        $event->setResponse(ResponseConverter::toSymfony($close));
    }
}
