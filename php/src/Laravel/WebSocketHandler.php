<?php

declare(strict_types=1);

namespace Ws2fcgi\Laravel;

use Illuminate\Http\Request;

/**
 * A raw WebSocket route's handler: `Route::websocket('/chat', ChatHandler::class)`.
 *
 * Resolved from the container per event (constructor injection works), called
 * after the route's middleware (session, auth guard, the app's own), so
 * `$request->user()` is the logged-in user. Each method returns what the
 * event answers; see {@see WebSocketController::answer()} for the types.
 */
interface WebSocketHandler
{
    /** The handshake: accept (null, a 2xx) or refuse (a 3xx–5xx response). */
    public function onOpen(Request $request): mixed;

    /** A message, `$request->getContent()`; a body in the answer is the reply. */
    public function onMessage(Request $request): mixed;

    /** The connection has ended (`WS_CLOSE_CODE`); the answer is ignored. */
    public function onClose(Request $request): mixed;
}
