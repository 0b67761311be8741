<?php

declare(strict_types=1);

namespace App\Controller;

use Symfony\Component\HttpFoundation\Request;
use Symfony\Component\HttpKernel\Exception\AccessDeniedHttpException;
use Ws2fcgi\Event;
use Ws2fcgi\EventKind;
use Ws2fcgi\Response;
use Ws2fcgi\Symfony\Publisher;

/**
 * Every event of the WebSocket endpoint /ws, with the Symfony session of the
 * handshake's cookie.
 *
 *   open     refused (403) without a logged-in user; accepted with
 *            "hello <user>", joining "news", the user kept as metadata
 *   message  "boom"           the controller throws (the subscriber closes with 1011)
 *            "forbidden"      AccessDeniedHttpException (the subscriber closes with 1008)
 *            "others:<text>"  published to "news" for everyone but the sender
 *            anything else    {"user":<session user>,"meta":<WS_META_USER>,"echo":<text>}
 */
final class WsController
{
    public function __construct(private readonly Publisher $publisher)
    {
    }

    public function __invoke(Event $event, Request $request): Response
    {
        $user = $request->getSession()->get('user');
        return match ($event->kind) {
            EventKind::Open => \is_string($user)
                ? Response::accept("hello $user")->join('news')->meta('user', $user)
                : Response::refuse(403, 'log in first'),
            EventKind::Message => $this->message($event, (string) $user),
            default => Response::accept(),
        };
    }

    private function message(Event $event, string $user): Response
    {
        if ($event->body === 'boom') {
            throw new \RuntimeException('the controller failed on purpose');
        }
        if ($event->body === 'forbidden') {
            throw new AccessDeniedHttpException('not for you');
        }
        if (\str_starts_with($event->body, 'others:')) {
            $text = \substr($event->body, \strlen('others:'));
            $this->publisher->publish('news', ['from' => $user, 'text' => $text], toOthers: true);
            return Response::accept();
        }
        return Response::accept(\json_encode([
            'user' => $user,
            'meta' => $event->meta('user'),
            'echo' => $event->body,
        ], \JSON_THROW_ON_ERROR));
    }
}
