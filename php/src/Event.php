<?php

declare(strict_types=1);

namespace Ws2fcgi;

use Ws2fcgi\Exception\InvalidEventException;

/**
 * One ws2fcgi event as PHP receives it, read from the CGI variables
 * (`$_SERVER['WS_*']`) and the request body, so a handler need not know
 * their names:
 *
 *     $event = Ws2fcgi\Event::fromGlobals();
 *     if ($event->kind === Ws2fcgi\EventKind::Message) {
 *         $text = $event->body;
 *     }
 *
 * Every field is what the daemon sent (docs/protocol.md, "Event variables"
 * and "Pusher events"); fields an event does not carry are null.
 */
final class Event
{
    /**
     * @param EventKind             $kind         WS_EVENT
     * @param string|null           $connectionId WS_CONNECTION_ID; null for a channel's events
     * @param string                $body         the request body: a message, a client event's
     *                                            data, a subscribe's channel_data; '' otherwise
     * @param string|null           $messageType  WS_MESSAGE_TYPE, 'text' or 'binary' (message events)
     * @param array<string, string> $meta         the WS_META_* entries, by lower-case name
     *                                            (WS_META_USER_ID is 'user_id')
     * @param int|null              $closeCode    WS_CLOSE_CODE (close events)
     * @param string|null           $closeReason  WS_CLOSE_REASON (close events)
     * @param string|null           $appId        WS_PUSHER_APP_ID (Pusher apps)
     * @param string|null           $socketId     WS_PUSHER_SOCKET_ID (Pusher connection events)
     * @param string|null           $channel      WS_PUSHER_CHANNEL (subscribe, client_event, a channel's events)
     * @param string|null           $pusherEvent  WS_PUSHER_EVENT, the client-* event's name (client_event)
     * @param string|null           $userId       WS_PUSHER_USER_ID: the presence member, else the signed-in user
     */
    public function __construct(
        public readonly EventKind $kind,
        public readonly ?string $connectionId,
        public readonly string $body = '',
        public readonly ?string $messageType = null,
        public readonly array $meta = [],
        public readonly ?int $closeCode = null,
        public readonly ?string $closeReason = null,
        public readonly ?string $appId = null,
        public readonly ?string $socketId = null,
        public readonly ?string $channel = null,
        public readonly ?string $pusherEvent = null,
        public readonly ?string $userId = null,
    ) {
    }

    /**
     * The event of the current request: $_SERVER and php://input.
     *
     * @throws InvalidEventException when this request is not a ws2fcgi event
     */
    public static function fromGlobals(): self
    {
        return self::fromArray($_SERVER, (string) \file_get_contents('php://input'));
    }

    /**
     * The event described by CGI variables, e.g. `$request->server->all()`
     * in Symfony, and the request body.
     *
     * @param array<string, mixed> $server
     *
     * @throws InvalidEventException when WS_EVENT is missing or unknown, or a
     *                               connection's event has no WS_CONNECTION_ID
     */
    public static function fromArray(array $server, string $body = ''): self
    {
        $name = self::string($server, 'WS_EVENT');
        if ($name === null) {
            throw new InvalidEventException('ws2fcgi: not a ws2fcgi event: WS_EVENT is not set');
        }
        $kind = EventKind::tryFrom($name);
        if ($kind === null) {
            throw new InvalidEventException(\sprintf('ws2fcgi: unknown event WS_EVENT=%s', self::excerpt($name)));
        }
        $connectionId = self::string($server, 'WS_CONNECTION_ID');
        if ($connectionId === null && !$kind->isChannelEvent()) {
            throw new InvalidEventException("ws2fcgi: a {$kind->value} event without WS_CONNECTION_ID");
        }
        $meta = [];
        foreach ($server as $key => $value) {
            if (\is_string($key) && \str_starts_with($key, 'WS_META_') && \is_string($value)) {
                $meta[\strtolower(\substr($key, \strlen('WS_META_')))] = $value;
            }
        }
        \ksort($meta);
        $code = self::string($server, 'WS_CLOSE_CODE');
        if ($code !== null && !\ctype_digit($code)) {
            throw new InvalidEventException(\sprintf('ws2fcgi: WS_CLOSE_CODE=%s is not a number', self::excerpt($code)));
        }
        return new self(
            kind: $kind,
            connectionId: $connectionId,
            body: $body,
            messageType: self::string($server, 'WS_MESSAGE_TYPE'),
            meta: $meta,
            closeCode: $code === null ? null : (int) $code,
            closeReason: $kind === EventKind::Close ? (self::string($server, 'WS_CLOSE_REASON') ?? '') : null,
            appId: self::string($server, 'WS_PUSHER_APP_ID'),
            socketId: self::string($server, 'WS_PUSHER_SOCKET_ID'),
            channel: self::string($server, 'WS_PUSHER_CHANNEL'),
            pusherEvent: self::string($server, 'WS_PUSHER_EVENT'),
            userId: self::string($server, 'WS_PUSHER_USER_ID'),
        );
    }

    /**
     * One metadata entry, by any spelling of its name: 'User-Id', 'user_id'
     * and 'USER_ID' are the same entry (WS_META_USER_ID), as for the
     * X-WS-Meta-* directive. Null when it is not set.
     */
    public function meta(string $name): ?string
    {
        return $this->meta[\strtolower(\str_replace('-', '_', $name))] ?? null;
    }

    /** A binary message (WS_MESSAGE_TYPE=binary). */
    public function isBinary(): bool
    {
        return $this->messageType === 'binary';
    }

    /** Whether this event comes from a Pusher app's connection or channel. */
    public function isPusher(): bool
    {
        return $this->appId !== null;
    }

    /**
     * The body decoded as JSON (a client event's data, a subscribe's
     * channel_data, a JSON message), objects as arrays.
     *
     * @throws \JsonException when the body is not JSON
     */
    public function json(): mixed
    {
        return \json_decode($this->body, true, 512, \JSON_THROW_ON_ERROR);
    }

    /** @param array<string, mixed> $server */
    private static function string(array $server, string $name): ?string
    {
        $value = $server[$name] ?? null;
        return \is_string($value) ? $value : null;
    }

    private static function excerpt(string $text): string
    {
        $text = \strlen($text) > 60 ? \substr($text, 0, 60) . '...' : $text;
        return \json_encode($text, \JSON_UNESCAPED_SLASHES | \JSON_UNESCAPED_UNICODE | \JSON_INVALID_UTF8_SUBSTITUTE) ?: '""';
    }
}
