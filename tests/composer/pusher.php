<?php
// The app's Pusher script (`script` of its [[pusher.app]], auth = "php"),
// with the package's event API: every event is read with Ws2fcgi\Event,
// appended to var/pusher-events.log as one JSON line (what Event made of
// it), and answered with Ws2fcgi\Response.
//
//   open          accepted; the metadata user=ada (later events' WS_META_USER)
//   subscribe     presence-*: the member "ada" with user_info {"name":"Ada",
//                 "claimed":<the user_id of the client's channel_data, if any>};
//                 anything else: refused with 403
//   client_event  {"spam":true} refused with 422, anything else relayed
//   the others    logged only

declare(strict_types=1);

require __DIR__ . '/vendor/autoload.php';

use Ws2fcgi\Event;
use Ws2fcgi\EventKind;
use Ws2fcgi\Response;

$event = Event::fromGlobals();
@mkdir(__DIR__ . '/var');
file_put_contents(__DIR__ . '/var/pusher-events.log', json_encode([
    'kind' => $event->kind->value,
    'pusher' => $event->isPusher(),
    'conn' => $event->connectionId,
    'app' => $event->appId,
    'socket' => $event->socketId,
    'channel' => $event->channel,
    'name' => $event->pusherEvent,
    'user' => $event->userId,
    'meta' => $event->meta('user'),
    'code' => $event->closeCode,
]) . "\n", FILE_APPEND | LOCK_EX);

$response = match ($event->kind) {
    EventKind::Open => Response::accept()->meta('user', 'ada'),
    EventKind::Subscribe => str_starts_with((string) $event->channel, 'presence-')
        ? Response::accept()->presence((string) $event->meta('user'), [
            'name' => 'Ada',
            'claimed' => $event->body === '' ? null : ($event->json()['user_id'] ?? null),
        ])
        : Response::refuse(403, 'not for you'),
    EventKind::ClientEvent => ($event->json()['spam'] ?? false) === true
        ? Response::refuse(422, 'no spam')
        : Response::accept(),
    default => Response::accept(),
};
$response->send();
