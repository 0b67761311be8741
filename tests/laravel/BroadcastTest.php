<?php

declare(strict_types=1);

namespace Ws2fcgi\Tests\Laravel;

use Illuminate\Broadcasting\BroadcastEvent;
use Illuminate\Broadcasting\BroadcastException;
use Illuminate\Broadcasting\InteractsWithSockets;
use Illuminate\Broadcasting\PresenceChannel;
use Illuminate\Broadcasting\PrivateChannel;
use Illuminate\Contracts\Broadcasting\Factory as BroadcastFactory;
use Illuminate\Contracts\Broadcasting\ShouldBroadcast;
use PHPUnit\Framework\TestCase;
use Ws2fcgi\ClientInterface;
use Ws2fcgi\Exception\DaemonException;
use Ws2fcgi\Laravel\Ws2fcgiBroadcaster;

/**
 * What broadcast() hands the control socket: the calls a real app's
 * BroadcastEvent makes, against a mock of ClientInterface.
 */
final class BroadcastTest extends TestCase
{
    /** Runs an event as Laravel's queued (or sync) BroadcastEvent job does. */
    private function broadcast(object $event, Ws2fcgiBroadcaster $broadcaster): void
    {
        $factory = $this->createMock(BroadcastFactory::class);
        $factory->method('connection')->willReturn($broadcaster);
        (new BroadcastEvent($event))->handle($factory);
    }

    private function broadcaster(ClientInterface $client): Ws2fcgiBroadcaster
    {
        return new Ws2fcgiBroadcaster($client, '1001', 'app-key', 'app-secret');
    }

    public function testTheEventNameChannelsAndPayloadAreWhatThePusherDriverSends(): void
    {
        $client = $this->createMock(ClientInterface::class);
        $client->expects(self::once())->method('pusherPublish')
            ->with('1001', ['private-orders.7', 'presence-shop'], OrderShipped::class, '{"order":{"id":7,"url":"https:\/\/shop.example\/7"}}', null)
            ->willReturn(2);

        $this->broadcast(new OrderShipped(7), $this->broadcaster($client));
    }

    public function testToOthersPassesTheSocketIdAndLeavesItOutOfThePayload(): void
    {
        $client = $this->createMock(ClientInterface::class);
        $client->expects(self::once())->method('pusherPublish')
            ->with('1001', ['private-orders.7', 'presence-shop'], OrderShipped::class, self::callback(fn ($data) => ! str_contains($data, 'socket')), '1234.5678')
            ->willReturn(1);

        $event = new OrderShipped(7);
        $event->socket = '1234.5678'; // what ->toOthers() sets from X-Socket-ID
        $this->broadcast($event, $this->broadcaster($client));
    }

    public function testBroadcastAsNamesTheEvent(): void
    {
        $client = $this->createMock(ClientInterface::class);
        $client->expects(self::once())->method('pusherPublish')
            ->with('1001', ['private-orders.7', 'presence-shop'], 'order.shipped', self::anything(), null)
            ->willReturn(0);

        $this->broadcast(new NamedOrderShipped(7), $this->broadcaster($client));
    }

    public function testChannelsAreSentAHundredAtATime(): void
    {
        $calls = [];
        $client = $this->createMock(ClientInterface::class);
        $client->expects(self::exactly(3))->method('pusherPublish')
            ->willReturnCallback(function (string $app, array $channels) use (&$calls) {
                $calls[] = $channels;

                return count($channels);
            });

        $channels = array_map(fn ($i) => "c$i", range(1, 250));
        $this->broadcaster($client)->broadcast($channels, 'E', ['a' => 1]);

        self::assertSame([100, 100, 50], array_map('count', $calls));
        self::assertSame($channels, array_merge(...$calls));
    }

    public function testADaemonRefusalBecomesABroadcastException(): void
    {
        $client = $this->createMock(ClientInterface::class);
        $client->method('pusherPublish')->willThrowException(new DaemonException('unknown pusher app "1001"', ['ok' => false, 'error' => 'unknown pusher app "1001"']));

        $this->expectException(BroadcastException::class);
        $this->expectExceptionMessage('unknown pusher app "1001"');
        $this->broadcaster($client)->broadcast(['orders'], 'E', []);
    }

    public function testAPayloadThatIsNotJsonBecomesABroadcastException(): void
    {
        $client = $this->createMock(ClientInterface::class);
        $client->expects(self::never())->method('pusherPublish');

        $this->expectException(BroadcastException::class);
        $this->broadcaster($client)->broadcast(['orders'], 'E', ['bad' => "\xff"]);
    }
}

class OrderShipped implements ShouldBroadcast
{
    use InteractsWithSockets;

    public array $order;

    public function __construct(int $id)
    {
        $this->order = ['id' => $id, 'url' => "https://shop.example/$id"];
    }

    public function broadcastOn()
    {
        return [new PrivateChannel('orders.' . $this->order['id']), new PresenceChannel('shop')];
    }
}

class NamedOrderShipped extends OrderShipped
{
    public function broadcastAs()
    {
        return 'order.shipped';
    }
}
