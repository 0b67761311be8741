<?php

declare(strict_types=1);

namespace Ws2fcgi\Tests\Laravel;

use Illuminate\Auth\GenericUser;
use Illuminate\Broadcasting\BroadcastException;
use Illuminate\Http\Request;
use PHPUnit\Framework\TestCase;
use Ws2fcgi\ClientInterface;
use Ws2fcgi\Laravel\PusherEncryption;
use Ws2fcgi\Laravel\Ws2fcgiBroadcaster;

/**
 * private-encrypted- channels as pusher-http-php does them: the shared secret
 * in the authorization answer, the event sealed with it (what pusher-js opens).
 */
final class EncryptedChannelTest extends TestCase
{
    private const KEY = 'app-key';
    private const SECRET = 'app-secret';

    private static function masterKey(): string
    {
        return base64_encode(str_repeat("\x07", 32));
    }

    /** What pusher-js (and pusher-http-php) derive for a channel. */
    private static function channelKey(string $channel): string
    {
        return hash('sha256', $channel . str_repeat("\x07", 32), true);
    }

    public function testTheAuthorizationCarriesTheChannelsSharedSecret(): void
    {
        $broadcaster = new Ws2fcgiBroadcaster($this->createMock(ClientInterface::class), '1001', self::KEY, self::SECRET, new PusherEncryption(self::masterKey()));
        $broadcaster->channel('orders.{id}', fn ($user, $id) => (int) $user->id === (int) $id);
        $request = Request::create('/broadcasting/auth', 'POST', ['channel_name' => 'private-encrypted-orders.7', 'socket_id' => '1.2']);
        $request->setUserResolver(fn () => new GenericUser(['id' => 7]));

        $answer = $broadcaster->auth($request);

        self::assertSame(self::KEY . ':' . hash_hmac('sha256', '1.2:private-encrypted-orders.7', self::SECRET), $answer['auth']);
        self::assertSame(base64_encode(self::channelKey('private-encrypted-orders.7')), $answer['shared_secret']);
    }

    public function testWithoutAMasterKeyTheAuthorizationFailsLoudly(): void
    {
        $broadcaster = new Ws2fcgiBroadcaster($this->createMock(ClientInterface::class), '1001', self::KEY, self::SECRET);
        $broadcaster->channel('orders.{id}', fn () => true);
        $request = Request::create('/broadcasting/auth', 'POST', ['channel_name' => 'private-encrypted-orders.7', 'socket_id' => '1.2']);
        $request->setUserResolver(fn () => new GenericUser(['id' => 7]));

        $this->expectException(\LogicException::class);
        $this->expectExceptionMessage('encryption master key');
        $broadcaster->auth($request);
    }

    public function testAnEventToAnEncryptedChannelIsSealedWithItsKeyAndPublishedAlone(): void
    {
        $calls = [];
        $client = $this->createMock(ClientInterface::class);
        $client->expects(self::exactly(3))->method('pusherPublish')
            ->willReturnCallback(function (string $app, array $channels, string $event, string $data, ?string $socket) use (&$calls) {
                $calls[] = [$channels, $event, $data, $socket];

                return 1;
            });
        $broadcaster = new Ws2fcgiBroadcaster($client, '1001', self::KEY, self::SECRET, new PusherEncryption(self::masterKey()));

        $broadcaster->broadcast(['private-encrypted-a', 'orders', 'private-encrypted-b'], 'OrderShipped', ['id' => 7, 'socket' => '9.9']);

        self::assertSame([['orders'], 'OrderShipped', '{"id":7}', '9.9'], $calls[0]);
        foreach ([1 => 'private-encrypted-a', 2 => 'private-encrypted-b'] as $i => $channel) {
            [$channels, $event, $data, $socket] = $calls[$i];
            self::assertSame([[$channel], 'OrderShipped', '9.9'], [$channels, $event, $socket]);
            $sealed = json_decode($data, true);
            self::assertSame(['nonce', 'ciphertext'], array_keys($sealed));
            $nonce = base64_decode($sealed['nonce'], true);
            self::assertSame(SODIUM_CRYPTO_SECRETBOX_NONCEBYTES, strlen($nonce));
            self::assertSame('{"id":7}', sodium_crypto_secretbox_open(base64_decode($sealed['ciphertext'], true), $nonce, self::channelKey($channel)));
        }
        self::assertNotSame($calls[1][2], $calls[2][2]);
    }

    public function testWithoutAMasterKeyAnEncryptedBroadcastFailsAndSendsNothingPlain(): void
    {
        $client = $this->createMock(ClientInterface::class);
        $client->expects(self::never())->method('pusherPublish');
        $broadcaster = new Ws2fcgiBroadcaster($client, '1001', self::KEY, self::SECRET);

        $this->expectException(BroadcastException::class);
        $broadcaster->broadcast(['private-encrypted-a'], 'E', ['secret' => 'x']);
    }

    public function testAMasterKeyMustBe32Bytes(): void
    {
        $this->expectException(\InvalidArgumentException::class);
        new PusherEncryption(base64_encode('short'));
    }
}
