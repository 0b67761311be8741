<?php

declare(strict_types=1);

namespace Ws2fcgi;

/**
 * PHP's answer to a ws2fcgi event, built without writing `X-WS-*` headers by
 * hand (docs/protocol.md, "PHP's answer" and "Directives"):
 *
 *     Ws2fcgi\Response::accept('welcome')
 *         ->join('room', 'lobby')
 *         ->meta('user', $userId)
 *         ->send();                       // plain PHP: status, headers, body
 *
 *     Ws2fcgi\Response::refuse(403, 'log in first')->send();
 *
 * `send()` emits it through PHP's header() and echo; `toArray()` gives the
 * status, headers and body for a framework to turn into its own response.
 *
 * Immutable: every method returns a new Response. Arguments the daemon would
 * skip (a channel name with a comma, a close code it may not send, a
 * metadata value over 4096 bytes) throw \InvalidArgumentException here, at
 * the line that made them, instead of becoming an `ignored directive` in
 * the daemon's log. Directives on a refusal throw \LogicException: the
 * daemon ignores them.
 */
final class Response
{
    /** Longest channel name the daemon accepts, in bytes. */
    public const MAX_CHANNEL_BYTES = 200;

    /** Longest metadata value the daemon accepts, in bytes. */
    public const MAX_META_VALUE_BYTES = 4096;

    /** Longest close reason, in bytes (a close frame holds 125, two are the code). */
    public const MAX_CLOSE_REASON_BYTES = 123;

    /**
     * @param list<string>          $join
     * @param list<string>          $leave
     * @param array<string, string> $meta    name => value ('' deletes), in call order
     * @param list<array{0: string, 1: string}> $headers other headers, in order
     */
    private function __construct(
        private readonly int $status,
        private readonly string $body = '',
        private readonly ?string $contentType = null,
        private readonly array $join = [],
        private readonly array $leave = [],
        private readonly array $meta = [],
        private readonly ?string $close = null,
        private readonly array $headers = [],
    ) {
    }

    /**
     * A 2xx answer: accepts an open event (and subscribe, client_event), and
     * is the plain answer to a message. A non-empty $body is sent to this
     * connection as one message (text; see reply() for binary).
     */
    public static function accept(string $body = ''): self
    {
        return new self(200, $body);
    }

    /**
     * Refuses the handshake (open), a Pusher subscription (subscribe) or a
     * client event (client_event). For an open event the client gets this
     * status and $reason as a plain-text body; no connection exists.
     *
     * @param int $status 300 to 599
     *
     * @throws \InvalidArgumentException for a status outside 300-599
     */
    public static function refuse(int $status = 403, string $reason = ''): self
    {
        if ($status < 300 || $status > 599) {
            throw new \InvalidArgumentException("ws2fcgi: refuse with a status from 300 to 599, not $status");
        }
        return new self($status, $reason, $reason === '' ? null : 'text/plain; charset=utf-8');
    }

    /**
     * The body sent to this connection as one message: text (it must then be
     * UTF-8, or the daemon sends it as binary with a warning), or binary.
     */
    public function reply(string $body, bool $binary = false): self
    {
        $this->assertAccepting('reply');
        return $this->with(body: $body, contentType: $binary ? 'application/octet-stream' : null);
    }

    /**
     * Adds this connection to channels (X-WS-Join), applied before the body is sent.
     *
     * @throws \InvalidArgumentException for a name the daemon would skip
     */
    public function join(string ...$channels): self
    {
        $this->assertAccepting('join');
        return $this->with(join: [...$this->join, ...self::channels($channels)]);
    }

    /**
     * Removes this connection from channels (X-WS-Leave); leaves are applied before joins.
     *
     * @throws \InvalidArgumentException for a name the daemon would skip
     */
    public function leave(string ...$channels): self
    {
        $this->assertAccepting('leave');
        return $this->with(leave: [...$this->leave, ...self::channels($channels)]);
    }

    /**
     * Sets a metadata entry of this connection (X-WS-Meta-<Name>), seen as
     * WS_META_<NAME> by its later events; null or '' deletes it. The daemon
     * trims the value.
     *
     * @param string $name 1 to 64 letters, digits, '-' and '_' (case and -/_ do not matter)
     *
     * @throws \InvalidArgumentException for a name or value the daemon would skip
     */
    public function meta(string $name, string|int|float|\Stringable|null $value): self
    {
        $this->assertAccepting('meta');
        if (\preg_match('/^[A-Za-z0-9_-]{1,64}$/', $name) !== 1) {
            throw new \InvalidArgumentException(\sprintf(
                'ws2fcgi: metadata name %s must be 1 to 64 letters, digits, "-" and "_"',
                self::quote($name),
            ));
        }
        $value = $value === null ? '' : (string) $value;
        if (\strlen($value) > self::MAX_META_VALUE_BYTES) {
            throw new \InvalidArgumentException(\sprintf(
                'ws2fcgi: metadata value of %s is %d bytes, more than %d',
                $name,
                \strlen($value),
                self::MAX_META_VALUE_BYTES,
            ));
        }
        self::assertHeaderValue($value, "metadata value of $name");
        $meta = $this->meta;
        // One entry per name, whatever its spelling: the last one counts.
        $key = \strtolower(\str_replace('-', '_', $name));
        foreach (\array_keys($meta) as $existing) {
            if (\strtolower(\str_replace('-', '_', $existing)) === $key) {
                unset($meta[$existing]);
            }
        }
        $meta[$name] = \trim($value);
        return $this->with(meta: $meta);
    }

    /**
     * Closes the connection after this answer's body (X-WS-Close). In an
     * open answer the connection is accepted, the body sent, then closed.
     *
     * @param int $code 1000-1003, 1007-1014 or 3000-4999 (4000-4999 are the application's)
     *
     * @throws \InvalidArgumentException for a code the daemon may not send or a reason over 123 bytes
     */
    public function close(int $code = 1000, string $reason = ''): self
    {
        $this->assertAccepting('close');
        $sendable = ($code >= 1000 && $code <= 1003) || ($code >= 1007 && $code <= 1014)
            || ($code >= 3000 && $code <= 4999);
        if (!$sendable) {
            throw new \InvalidArgumentException(
                "ws2fcgi: close code $code may not be sent (use 1000-1003, 1007-1014 or 3000-4999)"
            );
        }
        if (\strlen($reason) > self::MAX_CLOSE_REASON_BYTES || \preg_match('//u', $reason) !== 1) {
            throw new \InvalidArgumentException(\sprintf(
                'ws2fcgi: a close reason is at most %d bytes of UTF-8',
                self::MAX_CLOSE_REASON_BYTES,
            ));
        }
        self::assertHeaderValue($reason, 'close reason');
        return $this->with(close: $reason === '' ? (string) $code : "$code $reason");
    }

    /**
     * Authorizes a Pusher presence subscription as member $userId: the body
     * becomes `{"user_id":..,"user_info":..}`, what the daemon reads from a
     * 2xx answer to a presence channel's subscribe event.
     *
     * @param mixed $userInfo anything JSON can encode; null for none
     *
     * @throws \InvalidArgumentException for an empty user id or info JSON cannot encode
     */
    public function presence(string|int $userId, mixed $userInfo = null): self
    {
        $this->assertAccepting('presence');
        if ($userId === '') {
            throw new \InvalidArgumentException('ws2fcgi: a presence member needs a user id');
        }
        $member = ['user_id' => \is_int($userId) ? (string) $userId : $userId];
        if ($userInfo !== null) {
            $member['user_info'] = $userInfo;
        }
        try {
            $json = \json_encode($member, \JSON_UNESCAPED_SLASHES | \JSON_UNESCAPED_UNICODE | \JSON_THROW_ON_ERROR);
        } catch (\JsonException $e) {
            throw new \InvalidArgumentException('ws2fcgi: cannot encode the presence member: ' . $e->getMessage(), 0, $e);
        }
        return $this->with(body: $json, contentType: 'application/json');
    }

    /**
     * Any other header, appended: `Set-Cookie` (sent on the 101 of an
     * accepted handshake, or with a refusal), `Sec-WebSocket-Protocol` (the
     * chosen subprotocol), or headers of a refusal. Directives (X-WS-*) have
     * their own methods.
     *
     * @throws \InvalidArgumentException for a malformed name, an X-WS-* name, or a line break in the value
     */
    public function withHeader(string $name, string $value): self
    {
        if (\preg_match('/^[!#$%&\'*+.^_`|~0-9A-Za-z-]+$/', $name) !== 1) {
            throw new \InvalidArgumentException(\sprintf('ws2fcgi: %s is not a header name', self::quote($name)));
        }
        if (\str_starts_with(\strtolower($name), 'x-ws-')) {
            throw new \InvalidArgumentException(
                "ws2fcgi: $name is a directive: use join(), leave(), meta() or close()"
            );
        }
        self::assertHeaderValue($value, "header $name");
        return $this->with(headers: [...$this->headers, [$name, $value]]);
    }

    /** The HTTP status: 200 for accept(), the refusal's otherwise. */
    public function status(): int
    {
        return $this->status;
    }

    /** The body: the message to send, the refusal's text, or a presence member. */
    public function body(): string
    {
        return $this->body;
    }

    /**
     * Every header, directives included, by name in the order they apply,
     * each with its values (a name may repeat, e.g. Set-Cookie).
     *
     * @return array<string, list<string>>
     */
    public function headers(): array
    {
        $headers = [];
        if ($this->contentType !== null) {
            $headers['Content-Type'] = [$this->contentType];
        }
        if ($this->leave !== []) {
            $headers['X-WS-Leave'] = [\implode(', ', $this->leave)];
        }
        if ($this->join !== []) {
            $headers['X-WS-Join'] = [\implode(', ', $this->join)];
        }
        foreach ($this->meta as $name => $value) {
            $headers['X-WS-Meta-' . $name] = [$value];
        }
        if ($this->close !== null) {
            $headers['X-WS-Close'] = [$this->close];
        }
        foreach ($this->headers as [$name, $value]) {
            $headers[$name][] = $value;
        }
        return $headers;
    }

    /**
     * The whole answer, for a framework's response object.
     *
     * @return array{status: int, headers: array<string, list<string>>, body: string}
     */
    public function toArray(): array
    {
        return ['status' => $this->status, 'headers' => $this->headers(), 'body' => $this->body];
    }

    /**
     * Emits the answer in plain PHP: http_response_code(), header() for
     * each header (repeated names kept), then the body.
     *
     * @throws \LogicException when output or headers were already sent
     */
    public function send(): void
    {
        if (\headers_sent($file, $line)) {
            throw new \LogicException("ws2fcgi: cannot send the answer: output started at $file:$line");
        }
        \http_response_code($this->status);
        foreach ($this->headers() as $name => $values) {
            foreach ($values as $value) {
                \header("$name: $value", false);
            }
        }
        echo $this->body;
    }

    /**
     * @param list<string>|null                      $join
     * @param list<string>|null                      $leave
     * @param array<string, string>|null             $meta
     * @param list<array{0: string, 1: string}>|null $headers
     */
    private function with(
        ?string $body = null,
        ?string $contentType = null,
        ?array $join = null,
        ?array $leave = null,
        ?array $meta = null,
        ?string $close = null,
        ?array $headers = null,
    ): self {
        return new self(
            $this->status,
            $body ?? $this->body,
            $body !== null ? $contentType : $this->contentType,
            $join ?? $this->join,
            $leave ?? $this->leave,
            $meta ?? $this->meta,
            $close ?? $this->close,
            $headers ?? $this->headers,
        );
    }

    private function assertAccepting(string $what): void
    {
        if ($this->status >= 300) {
            throw new \LogicException(
                "ws2fcgi: $what() on a refusal: ws2fcgi applies directives and bodies of 2xx answers only"
            );
        }
    }

    /**
     * @param array<string> $channels
     * @return list<string>
     */
    private static function channels(array $channels): array
    {
        $list = [];
        foreach ($channels as $channel) {
            $length = \strlen($channel);
            if ($length === 0 || $length > self::MAX_CHANNEL_BYTES
                || \preg_match('/[\x00-\x1f\x7f,]/', $channel) === 1
                || \trim($channel) !== $channel
            ) {
                throw new \InvalidArgumentException(\sprintf(
                    'ws2fcgi: channel name %s must be 1 to %d bytes without commas, control characters '
                    . 'or surrounding spaces',
                    self::quote($channel),
                    self::MAX_CHANNEL_BYTES,
                ));
            }
            $list[] = $channel;
        }
        return $list;
    }

    private static function assertHeaderValue(string $value, string $what): void
    {
        if (\preg_match('/[\r\n\x00]/', $value) === 1) {
            throw new \InvalidArgumentException("ws2fcgi: the $what holds a line break or NUL");
        }
        if (\preg_match('//u', $value) !== 1) {
            throw new \InvalidArgumentException("ws2fcgi: the $what is not UTF-8");
        }
    }

    private static function quote(string $text): string
    {
        return \json_encode($text, \JSON_UNESCAPED_SLASHES | \JSON_UNESCAPED_UNICODE | \JSON_INVALID_UTF8_SUBSTITUTE) ?: '""';
    }
}
