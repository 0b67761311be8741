<?php

declare(strict_types=1);

namespace App\WebSockets;

use Illuminate\Http\Request;
use Illuminate\Support\Facades\Log;
use Ws2fcgi\Laravel\WebSocketHandler;

/**
 * ws://…/ws/me, behind the `auth` middleware: the logged-in user from the
 * Laravel session in every event. The handshake greets the user and keeps
 * the id on the connection (`X-WS-Meta-User-Id`); "whoami" is answered with
 * the user's name; anything else is a client bug: the exception is logged by
 * Laravel and the connection closed with 1011.
 */
final class MeHandler implements WebSocketHandler
{
    public function onOpen(Request $request): mixed
    {
        $user = $request->user();

        return response()->json(['hello' => $user->name])->header('X-WS-Meta-User-Id', (string) $user->id);
    }

    public function onMessage(Request $request): mixed
    {
        if ($request->getContent() !== 'whoami') {
            throw new \InvalidArgumentException('ws/me understands "whoami" only');
        }

        return json_encode(['name' => $request->user()->name, 'id' => (int) $request->server('WS_META_USER_ID')]);
    }

    public function onClose(Request $request): mixed
    {
        Log::info('ws/me closed', ['user' => $request->user()->id, 'code' => $request->server('WS_CLOSE_CODE')]);

        return null;
    }
}
