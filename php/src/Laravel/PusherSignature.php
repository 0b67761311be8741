<?php

declare(strict_types=1);

namespace Ws2fcgi\Laravel;

/**
 * Pusher's channel authorization, as pusher-http-php signs it and ws2fcgi checks it.
 *
 * ```text
 * private:  auth = "<key>:" . hex(HMAC-SHA256(secret, "<socket_id>:<channel>"))
 * presence: auth = "<key>:" . hex(HMAC-SHA256(secret, "<socket_id>:<channel>:<channel_data>"))
 *           channel_data = {"user_id":"42","user_info":{...}}
 * ```
 *
 * Pure functions: no I/O, no Laravel.
 */
final class PusherSignature
{
    /** Pusher's socket ids: two runs of digits joined by a dot. */
    public const SOCKET_ID_PATTERN = '/\A\d+\.\d+\z/';

    public function __construct(
        private readonly string $key,
        private readonly string $secret,
    ) {
        if ($key === '' || $secret === '') {
            throw new \InvalidArgumentException('ws2fcgi: the Pusher app key and secret must not be empty');
        }
    }

    public static function isSocketId(string $socketId): bool
    {
        return preg_match(self::SOCKET_ID_PATTERN, $socketId) === 1;
    }

    /**
     * The answer to a private (or private-encrypted) channel's authorization.
     *
     * @return array{auth: string}
     */
    public function privateChannel(string $channel, string $socketId): array
    {
        return ['auth' => $this->sign($socketId . ':' . $channel)];
    }

    /**
     * The answer to a presence channel's authorization. `$userInfo` is what the
     * channel's callback in routes/channels.php returned; it is left out when
     * empty, as pusher-http-php leaves it out.
     *
     * @return array{auth: string, channel_data: string}
     */
    public function presenceChannel(string $channel, string $socketId, string|int $userId, mixed $userInfo): array
    {
        $data = ['user_id' => $userId];
        if ($userInfo) {
            $data['user_info'] = $userInfo;
        }
        $channelData = json_encode($data, JSON_THROW_ON_ERROR);

        return [
            'auth' => $this->sign($socketId . ':' . $channel . ':' . $channelData),
            'channel_data' => $channelData,
        ];
    }

    private function sign(string $subject): string
    {
        return $this->key . ':' . hash_hmac('sha256', $subject, $this->secret);
    }
}
