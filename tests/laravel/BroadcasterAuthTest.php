<?php

declare(strict_types=1);

namespace Ws2fcgi\Tests\Laravel;

use Illuminate\Auth\GenericUser;
use Illuminate\Http\Request;
use PHPUnit\Framework\TestCase;
use Symfony\Component\HttpKernel\Exception\AccessDeniedHttpException;
use Ws2fcgi\Client;
use Ws2fcgi\Laravel\Ws2fcgiBroadcaster;

/**
 * /broadcasting/auth as the ws2fcgi broadcaster answers it: the channel
 * callbacks decide, the answer is signed as Pusher's clients expect.
 */
final class BroadcasterAuthTest extends TestCase
{
    private const KEY = 'app-key';
    private const SECRET = 'app-secret';

    private Ws2fcgiBroadcaster $broadcaster;

    protected function setUp(): void
    {
        // No I/O happens for authorization: the client never connects here.
        $this->broadcaster = new Ws2fcgiBroadcaster(new Client('/nonexistent/control.sock'), '1001', self::KEY, self::SECRET);
        $this->broadcaster->channel('orders.{id}', fn ($user, $id) => (int) $user->id === (int) $id);
        $this->broadcaster->channel('room.{room}', fn ($user, $room) => $room === 'lobby' ? ['name' => $user->name] : false);
    }

    private function request(string $channel, string $socketId = '1234.5678', ?object $user = null): Request
    {
        $request = Request::create('/broadcasting/auth', 'POST', ['channel_name' => $channel, 'socket_id' => $socketId]);
        $request->setUserResolver(fn () => $user);

        return $request;
    }

    private static function ann(): GenericUser
    {
        return new GenericUser(['id' => 7, 'name' => 'Ann']);
    }

    public function testAPrivateChannelTheCallbackAllowsIsSigned(): void
    {
        $answer = $this->broadcaster->auth($this->request('private-orders.7', '1234.5678', self::ann()));

        $expected = self::KEY . ':' . hash_hmac('sha256', '1234.5678:private-orders.7', self::SECRET);
        self::assertSame(['auth' => $expected], $answer);
    }

    public function testAPresenceChannelCarriesTheMemberAndSignsIt(): void
    {
        $answer = $this->broadcaster->auth($this->request('presence-room.lobby', '1.2', self::ann()));

        self::assertSame('{"user_id":7,"user_info":{"name":"Ann"}}', $answer['channel_data']);
        self::assertSame(
            self::KEY . ':' . hash_hmac('sha256', '1.2:presence-room.lobby:' . $answer['channel_data'], self::SECRET),
            $answer['auth'],
        );
    }

    public function testACallbackThatSaysNoIsRefused(): void
    {
        $this->expectException(AccessDeniedHttpException::class);
        $this->broadcaster->auth($this->request('private-orders.8', '1.2', self::ann()));
    }

    public function testAPresenceCallbackThatSaysNoIsRefused(): void
    {
        $this->expectException(AccessDeniedHttpException::class);
        $this->broadcaster->auth($this->request('presence-room.staff', '1.2', self::ann()));
    }

    public function testAGuestIsRefusedAGuardedChannel(): void
    {
        $this->expectException(AccessDeniedHttpException::class);
        $this->broadcaster->auth($this->request('private-orders.7'));
    }

    public function testAChannelNoCallbackNamesIsRefused(): void
    {
        $this->expectException(AccessDeniedHttpException::class);
        $this->broadcaster->auth($this->request('private-invoices.7', '1.2', self::ann()));
    }

    public function testAMalformedSocketIdIsRefusedBeforeSigning(): void
    {
        $this->expectException(AccessDeniedHttpException::class);
        $this->broadcaster->auth($this->request('private-orders.7', '1.2:private-orders.8', self::ann()));
    }

    public function testAnEmptyAppIdIsAConfigurationError(): void
    {
        $this->expectException(\InvalidArgumentException::class);
        new Ws2fcgiBroadcaster(new Client('/nonexistent/control.sock'), '', self::KEY, self::SECRET);
    }
}
