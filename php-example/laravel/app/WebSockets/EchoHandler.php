<?php

declare(strict_types=1);

namespace App\WebSockets;

use Illuminate\Http\Request;
use Ws2fcgi\Event;
use Ws2fcgi\Laravel\WebSocketHandler;
use Ws2fcgi\Response;

/**
 * ws://…/ws/echo: every message comes back. Open to guests; what
 * docs/frameworks.md's cost figures measure against a plain PHP script.
 */
final class EchoHandler implements WebSocketHandler
{
    public function onOpen(Event $event, Request $request): ?Response
    {
        return null;
    }

    public function onMessage(Event $event, Request $request): Response
    {
        return Response::accept()->reply($event->body, $event->isBinary());
    }

    public function onClose(Event $event, Request $request): ?Response
    {
        return null;
    }
}
