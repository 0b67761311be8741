<?php

declare(strict_types=1);

namespace Ws2fcgi\Laravel;

use Illuminate\Contracts\Foundation\Application;
use Illuminate\Contracts\Http\Kernel as HttpKernel;
use Illuminate\Http\Request;
use Illuminate\Support\Str;
use Symfony\Component\HttpFoundation\Response;

/**
 * A Pusher `subscribe` event (`auth = "php"`) answered by routes/channels.php,
 * with no `/broadcasting/auth` round trip from the browser.
 *
 * The event is run through the HTTP kernel as the POST Echo would have made to
 * `ws2fcgi.auth_path` (Broadcast::routes(), with its middleware), carrying the
 * handshake's cookies, so the user comes from the Laravel session:
 *
 * ```text
 * WS_EVENT=subscribe WS_PUSHER_CHANNEL=presence-chat.1 WS_PUSHER_SOCKET_ID=1.2
 *   → POST /broadcasting/auth  channel_name=presence-chat.1&socket_id=1.2
 *   ← 200 {"auth":"…","channel_data":"{\"user_id\":1,\"user_info\":{…}}"}
 * → Status 200, body {"user_id":1,"user_info":{…}}   (a private channel: empty body)
 *   or the route's refusal status (403 …), which ws2fcgi turns into
 *   pusher:subscription_error
 * ```
 */
final class PusherSubscribe
{
    /**
     * @return array{0: Request, 1: Response}
     */
    public static function handle(Application $app, HttpKernel $kernel, Request $event): array
    {
        $channel = (string) $event->server->get('WS_PUSHER_CHANNEL', '');
        $socketId = (string) $event->server->get('WS_PUSHER_SOCKET_ID', '');
        if ($channel === '' || $socketId === '') {
            $app['log']->error('ws2fcgi: a subscribe event without WS_PUSHER_CHANNEL or WS_PUSHER_SOCKET_ID', [
                'channel' => $channel,
                'socket_id' => $socketId,
            ]);

            return [$event, self::refusal(400, 'subscribe event without a channel or socket id')];
        }

        $server = $event->server->all();
        $server['HTTP_ACCEPT'] = 'application/json';
        unset($server['CONTENT_TYPE'], $server['CONTENT_LENGTH'], $server['HTTP_CONTENT_TYPE'], $server['HTTP_CONTENT_LENGTH']);
        $path = (string) ($app['config']['ws2fcgi.auth_path'] ?? '/broadcasting/auth');
        $request = Request::create($path, 'POST', ['channel_name' => $channel, 'socket_id' => $socketId], $event->cookies->all(), [], $server);
        $request->attributes->set(EventKernel::EVENT_ATTRIBUTE, 'subscribe');

        $answer = $kernel->handle($request);
        if (! $answer->isSuccessful()) {
            $status = $answer->getStatusCode();
            if ($status === 404 || $status >= 500) {
                // Not a refusal by a channel callback: say what went wrong.
                $app['log']->error('ws2fcgi: the subscribe event could not be authorized', [
                    'channel' => $channel,
                    'status' => $status,
                    'auth_path' => $path,
                    'hint' => $status === 404 ? 'no route answers ws2fcgi.auth_path: call Broadcast::routes()' : null,
                ]);
            }

            return [$request, self::refusal($status >= 400 ? $status : 403, 'refused by ' . $path . ' (' . $status . ')')];
        }
        if (! Str::startsWith($channel, 'presence-')) {
            return [$request, new Response('', 200)];
        }

        $signed = json_decode((string) $answer->getContent(), true);
        $member = is_array($signed) && is_string($signed['channel_data'] ?? null) ? $signed['channel_data'] : null;
        if ($member === null) {
            $app['log']->error('ws2fcgi: the presence channel authorization has no channel_data', ['channel' => $channel]);

            return [$request, self::refusal(500, 'presence authorization without channel_data')];
        }

        return [$request, new Response($member, 200, ['Content-Type' => 'application/json'])];
    }

    private static function refusal(int $status, string $why): Response
    {
        return new Response($why . "\n", $status, ['Content-Type' => 'text/plain']);
    }
}
