<?php

declare(strict_types=1);

namespace App\Controller;

use Symfony\Component\HttpFoundation\Request;
use Symfony\Component\HttpFoundation\Response;
use Ws2fcgi\Symfony\Publisher;

/** Ordinary pages: a login that starts the session, and a page that pushes. */
final class PageController
{
    public function __construct(private readonly Publisher $publisher)
    {
    }

    /** GET /login?user=ada: the session the WebSocket handshake will carry. */
    public function login(Request $request): Response
    {
        $user = (string) $request->query->get('user', '');
        $request->getSession()->set('user', $user);
        return new Response("logged in as $user\n");
    }

    /** GET /announce?text=...: pushes {"announce":<text>} to the channel "news". */
    public function announce(Request $request): Response
    {
        $delivered = $this->publisher->publish('news', ['announce' => (string) $request->query->get('text', '')]);
        return new Response("delivered $delivered\n");
    }
}
