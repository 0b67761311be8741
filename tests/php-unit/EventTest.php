<?php

declare(strict_types=1);

namespace Ws2fcgi\Tests;

use PHPUnit\Framework\TestCase;
use Ws2fcgi\Event;
use Ws2fcgi\EventKind;
use Ws2fcgi\Exception\InvalidEventException;
use Ws2fcgi\Exception\Ws2fcgiException;

final class EventTest extends TestCase
{
    private const ID = '0000000300000000000000123f9a6c0e5d2b7a41';

    public function testAMessageEvent(): void
    {
        $event = Event::fromArray([
            'WS_EVENT' => 'message',
            'WS_CONNECTION_ID' => self::ID,
            'WS_MESSAGE_TYPE' => 'text',
            'WS_META_USER_ID' => '42',
            'WS_META_NICK' => 'ada',
            'WS_CONTROL_SOCKET' => '/run/ws2fcgi/control.sock',
            'HTTP_COOKIE' => 'sid=1',
        ], 'hello');
        self::assertSame(EventKind::Message, $event->kind);
        self::assertSame(self::ID, $event->connectionId);
        self::assertSame('hello', $event->body);
        self::assertSame('text', $event->messageType);
        self::assertFalse($event->isBinary());
        self::assertSame(['nick' => 'ada', 'user_id' => '42'], $event->meta);
        self::assertNull($event->closeCode);
        self::assertNull($event->closeReason);
        self::assertFalse($event->isPusher());
    }

    public function testMetaIsFoundByAnySpellingOfItsName(): void
    {
        $event = Event::fromArray(['WS_EVENT' => 'open', 'WS_CONNECTION_ID' => self::ID, 'WS_META_USER_ID' => '42']);
        self::assertSame('42', $event->meta('User-Id'));
        self::assertSame('42', $event->meta('user_id'));
        self::assertSame('42', $event->meta('USER_ID'));
        self::assertNull($event->meta('nick'));
    }

    public function testABinaryMessage(): void
    {
        $event = Event::fromArray(
            ['WS_EVENT' => 'message', 'WS_CONNECTION_ID' => self::ID, 'WS_MESSAGE_TYPE' => 'binary'],
            "\x00\xff",
        );
        self::assertTrue($event->isBinary());
        self::assertSame("\x00\xff", $event->body);
    }

    public function testACloseEvent(): void
    {
        $event = Event::fromArray([
            'WS_EVENT' => 'close',
            'WS_CONNECTION_ID' => self::ID,
            'WS_CLOSE_CODE' => '1001',
            'WS_CLOSE_REASON' => 'server shutdown',
        ]);
        self::assertSame(EventKind::Close, $event->kind);
        self::assertSame(1001, $event->closeCode);
        self::assertSame('server shutdown', $event->closeReason);
        self::assertFalse($event->kind->expectsAnswer());
    }

    public function testACloseEventWithoutAReasonHasAnEmptyOne(): void
    {
        $event = Event::fromArray(['WS_EVENT' => 'close', 'WS_CONNECTION_ID' => self::ID, 'WS_CLOSE_CODE' => '1000']);
        self::assertSame('', $event->closeReason);
    }

    public function testAPusherClientEvent(): void
    {
        $event = Event::fromArray([
            'WS_EVENT' => 'client_event',
            'WS_CONNECTION_ID' => self::ID,
            'WS_PUSHER_APP_ID' => '1001',
            'WS_PUSHER_SOCKET_ID' => '12.34',
            'WS_PUSHER_CHANNEL' => 'private-chat',
            'WS_PUSHER_EVENT' => 'client-typing',
            'WS_PUSHER_USER_ID' => 'u1',
        ], '{"typing":true}');
        self::assertSame(EventKind::ClientEvent, $event->kind);
        self::assertTrue($event->isPusher());
        self::assertSame('1001', $event->appId);
        self::assertSame('12.34', $event->socketId);
        self::assertSame('private-chat', $event->channel);
        self::assertSame('client-typing', $event->pusherEvent);
        self::assertSame('u1', $event->userId);
        self::assertSame(['typing' => true], $event->json());
        self::assertTrue($event->kind->expectsAnswer());
    }

    public function testAPusherSubscribeCarriesTheChannelDataAsItsBody(): void
    {
        $event = Event::fromArray([
            'WS_EVENT' => 'subscribe',
            'WS_CONNECTION_ID' => self::ID,
            'WS_PUSHER_APP_ID' => '1001',
            'WS_PUSHER_SOCKET_ID' => '12.34',
            'WS_PUSHER_CHANNEL' => 'presence-room',
        ], '{"user_id":"claimed"}');
        self::assertSame(EventKind::Subscribe, $event->kind);
        self::assertSame('presence-room', $event->channel);
        self::assertSame(['user_id' => 'claimed'], $event->json());
    }

    /** @return iterable<string, array{string}> */
    public static function channelEvents(): iterable
    {
        foreach (['member_added', 'member_removed', 'channel_occupied', 'channel_vacated'] as $name) {
            yield $name => [$name];
        }
    }

    /** @dataProvider channelEvents */
    public function testAChannelsEventHasNoConnection(string $name): void
    {
        $event = Event::fromArray([
            'WS_EVENT' => $name,
            'WS_PUSHER_APP_ID' => '1001',
            'WS_PUSHER_CHANNEL' => 'presence-room',
            'WS_PUSHER_USER_ID' => 'u9',
        ]);
        self::assertSame($name, $event->kind->value);
        self::assertTrue($event->kind->isChannelEvent());
        self::assertNull($event->connectionId);
        self::assertSame('presence-room', $event->channel);
        self::assertFalse($event->kind->expectsAnswer());
    }

    public function testAnOrdinaryRequestIsNotAnEvent(): void
    {
        $this->expectException(InvalidEventException::class);
        $this->expectExceptionMessage('WS_EVENT is not set');
        Event::fromArray(['REQUEST_METHOD' => 'GET']);
    }

    public function testAnUnknownEventIsRefusedByName(): void
    {
        try {
            Event::fromArray(['WS_EVENT' => 'teleport', 'WS_CONNECTION_ID' => self::ID]);
            self::fail('no exception');
        } catch (InvalidEventException $e) {
            self::assertStringContainsString('"teleport"', $e->getMessage());
            self::assertInstanceOf(Ws2fcgiException::class, $e);
        }
    }

    public function testAConnectionsEventNeedsItsId(): void
    {
        $this->expectException(InvalidEventException::class);
        $this->expectExceptionMessage('without WS_CONNECTION_ID');
        Event::fromArray(['WS_EVENT' => 'message']);
    }

    public function testACloseCodeThatIsNotANumberIsRefused(): void
    {
        $this->expectException(InvalidEventException::class);
        Event::fromArray(['WS_EVENT' => 'close', 'WS_CONNECTION_ID' => self::ID, 'WS_CLOSE_CODE' => '10x']);
    }

    public function testJsonOfABodyThatIsNotJsonThrows(): void
    {
        $event = Event::fromArray(['WS_EVENT' => 'message', 'WS_CONNECTION_ID' => self::ID], 'not json');
        $this->expectException(\JsonException::class);
        $event->json();
    }
}
