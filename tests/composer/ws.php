<?php
// The app's WebSocket handler, in plain PHP with the package's event API:
// Ws2fcgi\Event reads the event, Ws2fcgi\Response answers it (send()).
// install-test copies it into the app and runs the daemon with it.
//
//   open     ?token=ok accepts: the welcome {"id":..} as the first message,
//            joins "news", sets the metadata user=ada; anything else is
//            refused with 403 "token required"
//   message  "whoami"   {"id":..,"user":<WS_META_USER or null>,"type":"text"}
//            "forget"   deletes the metadata user, answers "forgotten"
//            "bye"      answers "closing" and closes with 4001 "asked to"
//            binary     echoed as binary, reversed
//            other      {"echo":<the text>}
//   close    nothing to answer (the client is gone)

declare(strict_types=1);

require __DIR__ . '/vendor/autoload.php';

use Ws2fcgi\Event;
use Ws2fcgi\EventKind;
use Ws2fcgi\Response;

$event = Event::fromGlobals();

$response = match ($event->kind) {
    EventKind::Open => ($_GET['token'] ?? '') === 'ok'
        ? Response::accept(json_encode(['id' => $event->connectionId]))->join('news')->meta('user', 'ada')
        : Response::refuse(403, 'token required'),
    EventKind::Message => on_message($event),
    default => Response::accept(),
};
$response->send();

function on_message(Event $event): Response
{
    if ($event->isBinary()) {
        return Response::accept()->reply(strrev($event->body), binary: true);
    }
    return match ($event->body) {
        'whoami' => Response::accept(json_encode([
            'id' => $event->connectionId,
            'user' => $event->meta('user'),
            'type' => $event->messageType,
        ])),
        'forget' => Response::accept('forgotten')->meta('user', null),
        'bye' => Response::accept('closing')->close(4001, 'asked to'),
        default => Response::accept(json_encode(['echo' => $event->body])),
    };
}
