<?php

declare(strict_types=1);

namespace Ws2fcgi\Tests\Symfony;

use PHPUnit\Framework\TestCase;
use Symfony\Component\HttpFoundation\Request;
use Symfony\Component\HttpFoundation\RequestStack;
use Ws2fcgi\ClientInterface;
use Ws2fcgi\Exception\EncodingException;
use Ws2fcgi\Symfony\Publisher;

/** The Publisher against a mock of ClientInterface: what it asks of the client. */
final class PublisherTest extends TestCase
{
    private static function stack(Request $request): RequestStack
    {
        $stack = new RequestStack();
        $stack->push($request);
        return $stack;
    }

    public function testArraysAreSentAsJsonAndStringsAsIs(): void
    {
        $client = $this->createMock(ClientInterface::class);
        $client->expects(self::exactly(2))->method('publish')
            ->withConsecutive(['news', '{"a":"é/1"}', null, false], ['news', 'plain', null, false])
            ->willReturn(3);
        $publisher = new Publisher($client);
        self::assertSame(3, $publisher->publish('news', ['a' => 'é/1']));
        self::assertSame(3, $publisher->publish('news', 'plain'));
    }

    public function testToOthersLeavesOutTheEventsConnection(): void
    {
        $request = new Request([], [], [], [], [], ['WS_EVENT' => 'message', 'WS_CONNECTION_ID' => 'c7']);
        $client = $this->createMock(ClientInterface::class);
        $client->expects(self::once())->method('publish')->with('news', '1', 'c7', false)->willReturn(1);
        (new Publisher($client, self::stack($request)))->publish('news', 1, toOthers: true);
    }

    public function testToOthersOutsideAnEventLeavesOutNobody(): void
    {
        $client = $this->createMock(ClientInterface::class);
        $client->expects(self::once())->method('publish')->with('news', '1', null, false)->willReturn(1);
        (new Publisher($client, self::stack(Request::create('/page'))))->publish('news', 1, toOthers: true);
    }

    public function testPusherToOthersUsesTheSocketIdOfTheEventOrTheXSocketIdHeader(): void
    {
        $client = $this->createMock(ClientInterface::class);
        $client->expects(self::exactly(3))->method('pusherPublish')
            ->withConsecutive(
                ['1001', ['orders'], 'created', ['id' => 7], '12.34'],
                ['1001', 'orders', 'created', 'x', '56.78'],
                ['1001', 'orders', 'created', 'x', null],
            )
            ->willReturn(1);
        $event = new Request([], [], [], [], [], ['WS_EVENT' => 'client_event', 'WS_CONNECTION_ID' => 'c1', 'WS_PUSHER_SOCKET_ID' => '12.34']);
        (new Publisher($client, self::stack($event)))->pusher('1001', ['orders'], 'created', ['id' => 7], toOthers: true);
        $page = Request::create('/orders', 'POST', server: ['HTTP_X_SOCKET_ID' => '56.78']);
        (new Publisher($client, self::stack($page)))->pusher('1001', 'orders', 'created', 'x', toOthers: true);
        (new Publisher($client, self::stack($page)))->pusher('1001', 'orders', 'created', 'x');
    }

    public function testDataJsonCannotEncodeThrowsBeforeAnythingIsSent(): void
    {
        $client = $this->createMock(ClientInterface::class);
        $client->expects(self::never())->method('publish');
        $this->expectException(EncodingException::class);
        (new Publisher($client))->publish('news', ['bad' => "\xff"]);
    }
}
