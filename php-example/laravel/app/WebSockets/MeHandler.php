<?php

declare(strict_types=1);

namespace App\WebSockets;

use Illuminate\Http\Request;
use Illuminate\Support\Facades\Log;
use Ws2fcgi\Event;
use Ws2fcgi\Laravel\WebSocketHandler;
use Ws2fcgi\Response;

/**
 * ws://…/ws/me, behind the `auth` middleware: the logged-in user from the
 * Laravel session in every event. The handshake greets the user and keeps
 * the id on the connection (metadata `user-id`); "whoami" is answered with
 * the user's name and that id; anything else is a client bug: the exception
 * is logged by Laravel and the connection closed with 1011.
 */
final class MeHandler implements WebSocketHandler
{
    public function onOpen(Event $event, Request $request): Response
    {
        $user = $request->user();

        return Response::accept(json_encode(['hello' => $user->name]))->meta('user-id', $user->id);
    }

    public function onMessage(Event $event, Request $request): Response
    {
        if ($event->body !== 'whoami') {
            throw new \InvalidArgumentException('ws/me understands "whoami" only');
        }

        return Response::accept(json_encode(['name' => $request->user()->name, 'id' => (int) $event->meta('user-id')]));
    }

    public function onClose(Event $event, Request $request): ?Response
    {
        Log::info('ws/me closed', ['user' => $request->user()->id, 'code' => $event->closeCode]);

        return null;
    }
}
