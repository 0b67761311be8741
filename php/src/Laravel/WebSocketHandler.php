<?php

declare(strict_types=1);

namespace Ws2fcgi\Laravel;

use Illuminate\Http\Request;
use Symfony\Component\HttpFoundation\Response as HttpResponse;
use Ws2fcgi\Event;
use Ws2fcgi\Response;

/**
 * A raw WebSocket route's handler: `Route::websocket('/chat', ChatHandler::class)`.
 *
 * Resolved from the container per event (constructor injection works), called
 * after the route's middleware (session, auth guard, the app's own), so
 * `$request->user()` is the logged-in user. `$event` is the event as
 * ws2fcgi sent it (kind, connection id, message, metadata, close code).
 *
 * Each method answers with the response builder, `Ws2fcgi\Response`
 * (`Response::accept('hi')->join('room')`, `Response::refuse(403)`,
 * `->reply(...)`, `->close(4000)` ...), or null (accept, nothing to send), or
 * any Laravel/Symfony response read as PHP's answer (docs/protocol.md).
 */
interface WebSocketHandler
{
    /** The handshake: accept, or refuse with a 3xx–5xx. */
    public function onOpen(Event $event, Request $request): Response|HttpResponse|null;

    /** A message (`$event->body`); a body in the answer is the reply. */
    public function onMessage(Event $event, Request $request): Response|HttpResponse|null;

    /** The connection has ended (`$event->closeCode`); the answer is ignored. */
    public function onClose(Event $event, Request $request): Response|HttpResponse|null;
}
