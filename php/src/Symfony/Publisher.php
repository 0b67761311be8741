<?php

declare(strict_types=1);

namespace Ws2fcgi\Symfony;

use Symfony\Component\HttpFoundation\Request;
use Symfony\Component\HttpFoundation\RequestStack;
use Ws2fcgi\ClientInterface;
use Ws2fcgi\Exception\EncodingException;
use Ws2fcgi\Exception\Ws2fcgiException;

/**
 * Pushes to WebSocket clients from a Symfony app: controllers, event
 * handlers, message handlers, commands. A service over ClientInterface that
 * JSON-encodes payloads and knows the request it runs in, so
 * `$toOthers: true` leaves out the connection (or Pusher socket) the current
 * request comes from, as Laravel's toOthers() does:
 *
 * - in a ws2fcgi event, its WS_CONNECTION_ID (raw channels) or
 *   WS_PUSHER_SOCKET_ID (Pusher channels);
 * - in an ordinary HTTP request, the `X-Socket-ID` header, the Pusher socket
 *   id that pusher-js and Laravel Echo send with an app's own requests.
 *
 * For everything else (presence, history, close, meta), use client().
 */
final class Publisher
{
    private const JSON_FLAGS = \JSON_UNESCAPED_SLASHES | \JSON_UNESCAPED_UNICODE | \JSON_THROW_ON_ERROR;

    public function __construct(
        private readonly ClientInterface $client,
        private readonly ?RequestStack $requests = null,
    ) {
    }

    /**
     * Publishes $data to a raw channel: a string as is, anything else as JSON.
     *
     * @return int how many connections of this node it was queued to
     *
     * @throws Ws2fcgiException
     */
    public function publish(string $channel, mixed $data, bool $toOthers = false): int
    {
        $except = $toOthers ? $this->currentConnection() : null;
        return $this->client->publish($channel, self::encode($data), except: $except);
    }

    /**
     * Sends $data to connections: a string as is, anything else as JSON.
     *
     * @param string|list<string> $to
     *
     * @throws Ws2fcgiException
     */
    public function send(string|array $to, mixed $data): int
    {
        return $this->client->send($to, self::encode($data));
    }

    /**
     * Publishes Pusher event $event to channels of Pusher app $app ($data as
     * pusherPublish() takes it).
     *
     * @param string|list<string> $channels
     *
     * @throws Ws2fcgiException
     */
    public function pusher(string $app, string|array $channels, string $event, mixed $data, bool $toOthers = false): int
    {
        $socketId = $toOthers ? $this->currentSocketId() : null;
        return $this->client->pusherPublish($app, $channels, $event, $data, $socketId);
    }

    /** The client, for the operations this service does not wrap. */
    public function client(): ClientInterface
    {
        return $this->client;
    }

    /** The connection id of the ws2fcgi event being handled, if any. */
    private function currentConnection(): ?string
    {
        $id = $this->request()?->server->get('WS_CONNECTION_ID');
        return \is_string($id) && $id !== '' ? $id : null;
    }

    /** The Pusher socket id of the event, or the X-Socket-ID of the HTTP request. */
    private function currentSocketId(): ?string
    {
        $request = $this->request();
        if ($request === null) {
            return null;
        }
        $id = $request->server->get('WS_PUSHER_SOCKET_ID') ?? $request->headers->get('X-Socket-ID');
        return \is_string($id) && $id !== '' ? $id : null;
    }

    private function request(): ?Request
    {
        return $this->requests?->getMainRequest();
    }

    private static function encode(mixed $data): string
    {
        if (\is_string($data)) {
            return $data;
        }
        try {
            return \json_encode($data, self::JSON_FLAGS);
        } catch (\JsonException $e) {
            throw new EncodingException('ws2fcgi: cannot encode the data as JSON: ' . $e->getMessage(), 0, $e);
        }
    }
}
