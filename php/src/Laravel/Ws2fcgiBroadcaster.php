<?php

declare(strict_types=1);

namespace Ws2fcgi\Laravel;

use Illuminate\Broadcasting\BroadcastException;
use Illuminate\Broadcasting\Broadcasters\Broadcaster;
use Illuminate\Broadcasting\Broadcasters\UsePusherChannelConventions;
use Illuminate\Support\Arr;
use Illuminate\Support\Str;
use Symfony\Component\HttpKernel\Exception\AccessDeniedHttpException;
use Ws2fcgi\ClientInterface;
use Ws2fcgi\Exception\Ws2fcgiException;

/**
 * Laravel's broadcaster for ws2fcgi's Pusher app (`'driver' => 'ws2fcgi'`).
 *
 * `broadcast()` publishes through the control socket (op `pusher_publish`) what
 * Laravel's PusherBroadcaster publishes through Pusher's HTTP API: the same
 * channel names, event name (`broadcastAs()` or the class name) and JSON payload
 * (`broadcastWith()`), so Echo listeners receive it unchanged; `->toOthers()`
 * leaves out the sender's socket id. `auth()` and `validAuthenticationResponse()`
 * answer `/broadcasting/auth` with Pusher's signatures.
 *
 * Written against what Laravel 8 to 12 share: the abstract Broadcaster, its
 * untyped method signatures and UsePusherChannelConventions.
 */
class Ws2fcgiBroadcaster extends Broadcaster
{
    use UsePusherChannelConventions;

    /** Channels per `pusher_publish`, as Pusher's own limit per event. */
    public const CHANNELS_PER_PUBLISH = 100;

    private readonly PusherSignature $signature;

    /**
     * @param  PusherEncryption|null  $encryption  the app's master key, for
     *                                             `private-encrypted-` channels
     */
    public function __construct(
        private readonly ClientInterface $client,
        private readonly string $appId,
        string $key,
        string $secret,
        private readonly ?PusherEncryption $encryption = null,
    ) {
        if ($appId === '') {
            throw new \InvalidArgumentException('ws2fcgi: the Pusher app id must not be empty (ws2fcgi.pusher.app_id)');
        }
        $this->signature = new PusherSignature($key, $secret);
    }

    /**
     * Authorizes a subscription: the channel's callback in routes/channels.php
     * decides for private and presence channels, with the request's user.
     *
     * @param  \Illuminate\Http\Request  $request
     * @return mixed
     *
     * @throws AccessDeniedHttpException
     */
    public function auth($request)
    {
        $channel = (string) $request->channel_name;
        $normalized = $this->normalizeChannelName($channel);

        if ($channel === '' || ($this->isGuardedChannel($channel) && ! $this->retrieveUser($request, $normalized))) {
            throw new AccessDeniedHttpException();
        }

        return parent::verifyUserCanAccessChannel($request, $normalized);
    }

    /**
     * The signed answer Pusher clients expect: `{"auth": ...}` for a private
     * channel, `{"auth": ..., "channel_data": ...}` for a presence channel.
     *
     * @param  \Illuminate\Http\Request  $request
     * @param  mixed  $result
     * @return mixed
     */
    public function validAuthenticationResponse($request, $result)
    {
        $channel = (string) $request->channel_name;
        $socketId = (string) $request->socket_id;
        if (! PusherSignature::isSocketId($socketId)) {
            throw new AccessDeniedHttpException('Invalid socket id');
        }

        if (Str::startsWith($channel, 'private')) {
            $answer = $this->signature->privateChannel($channel, $socketId);
            if (PusherEncryption::isEncrypted($channel)) {
                // pusher-js decrypts with this; ws2fcgi never sees it.
                $answer['shared_secret'] = $this->encryption()->sharedSecret($channel);
            }

            return $this->answer($request, $answer);
        }

        $user = $this->retrieveUser($request, $this->normalizeChannelName($channel));
        $userId = method_exists($user, 'getAuthIdentifierForBroadcasting')
            ? $user->getAuthIdentifierForBroadcasting()
            : $user->getAuthIdentifier();

        return $this->answer($request, $this->signature->presenceChannel($channel, $socketId, $userId, $result));
    }

    /**
     * Publishes one event to the channels, leaving out `$payload['socket']`
     * (set by `->toOthers()`), as Pusher's HTTP API does with `socket_id`.
     *
     * @param  array  $channels
     * @param  string  $event
     * @param  array  $payload
     * @return void
     *
     * @throws BroadcastException
     */
    public function broadcast(array $channels, $event, array $payload = [])
    {
        $socket = Arr::pull($payload, 'socket');
        $socketId = is_string($socket) && $socket !== '' ? $socket : null;
        // As pusher-http-php encodes it, so listeners see the same JSON.
        try {
            $data = json_encode($payload, JSON_THROW_ON_ERROR);
        } catch (\JsonException $e) {
            throw new BroadcastException('ws2fcgi: the payload cannot be JSON-encoded: ' . $e->getMessage(), 0, $e);
        }

        $names = $this->formatChannels($channels);
        $encrypted = array_values(array_filter($names, [PusherEncryption::class, 'isEncrypted']));
        $plain = array_values(array_diff($names, $encrypted));
        foreach (array_chunk($plain, self::CHANNELS_PER_PUBLISH) as $chunk) {
            $this->publish($chunk, (string) $event, $data, $socketId);
        }
        // Each encrypted channel has its own key, so its own publish.
        foreach ($encrypted as $channel) {
            try {
                $sealed = $this->encryption()->encrypt($channel, $data);
            } catch (\LogicException $e) {
                throw new BroadcastException($e->getMessage(), 0, $e);
            }
            $this->publish([$channel], (string) $event, $sealed, $socketId);
        }
    }

    /**
     * @param  list<string>  $channels
     *
     * @throws BroadcastException
     */
    private function publish(array $channels, string $event, string $data, ?string $socketId): void
    {
        try {
            $this->client->pusherPublish($this->appId, $channels, $event, $data, $socketId);
        } catch (Ws2fcgiException $e) {
            $message = $e->getMessage();
            throw new BroadcastException(str_starts_with($message, 'ws2fcgi') ? $message : 'ws2fcgi: ' . $message, 0, $e);
        }
    }

    /**
     * @throws \LogicException when no master key is configured
     */
    private function encryption(): PusherEncryption
    {
        return $this->encryption ?? throw new \LogicException(
            'ws2fcgi: private-encrypted- channels need the app\'s encryption master key '
            . '(config/ws2fcgi.php \'pusher.encryption_master_key_base64\', or \'encryption_master_key_base64\' in the connection)'
        );
    }

    /** The control socket client this broadcaster publishes with. */
    public function client(): ClientInterface
    {
        return $this->client;
    }

    /** The Pusher app id events are published to. */
    public function appId(): string
    {
        return $this->appId;
    }

    /**
     * @param  \Illuminate\Http\Request  $request
     * @param  array<string, string>  $answer
     * @return mixed
     */
    private function answer($request, array $answer)
    {
        // JSONP, as Laravel 8's PusherBroadcaster still offers it.
        $callback = $request->input('callback', false);
        if (! $callback) {
            return $answer;
        }

        return response()->json($answer)->withCallback($callback);
    }
}
