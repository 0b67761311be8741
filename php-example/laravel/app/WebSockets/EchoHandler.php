<?php

declare(strict_types=1);

namespace App\WebSockets;

use Illuminate\Http\Request;
use Ws2fcgi\Laravel\WebSocketHandler;

/**
 * ws://…/ws/echo: every message comes back. Open to guests; what
 * docs/frameworks.md's cost figures measure against a plain PHP script.
 */
final class EchoHandler implements WebSocketHandler
{
    public function onOpen(Request $request): mixed
    {
        return null;
    }

    public function onMessage(Request $request): mixed
    {
        return $request->getContent();
    }

    public function onClose(Request $request): mixed
    {
        return null;
    }
}
