<?php

declare(strict_types=1);

namespace Ws2fcgi\Tests\Symfony;

use PHPUnit\Framework\TestCase;
use Symfony\Component\HttpFoundation\Request;
use Symfony\Component\HttpKernel\ControllerMetadata\ArgumentMetadata;
use Symfony\Component\HttpKernel\Exception\BadRequestHttpException;
use Ws2fcgi\Event;
use Ws2fcgi\EventKind;
use Ws2fcgi\Symfony\EventValueResolver;

final class EventValueResolverTest extends TestCase
{
    private static function argument(bool $nullable = false, string $type = Event::class): ArgumentMetadata
    {
        return new ArgumentMetadata('event', $type, false, false, null, $nullable);
    }

    private static function message(string $body): Request
    {
        return new Request([], [], [], [], [], [
            'REQUEST_METHOD' => 'POST',
            'WS_EVENT' => 'message',
            'WS_CONNECTION_ID' => 'c1',
            'WS_MESSAGE_TYPE' => 'text',
            'WS_META_USER' => 'ada',
        ], $body);
    }

    public function testItResolvesTheEventOfTheRequest(): void
    {
        $resolver = new EventValueResolver();
        $request = self::message('hi');
        self::assertTrue($resolver->supports($request, self::argument()));
        $values = [...$resolver->resolve($request, self::argument())];
        self::assertCount(1, $values);
        self::assertInstanceOf(Event::class, $values[0]);
        self::assertSame(EventKind::Message, $values[0]->kind);
        self::assertSame('hi', $values[0]->body);
        self::assertSame('ada', $values[0]->meta('user'));
        self::assertSame($values[0], $request->attributes->get(EventValueResolver::ATTRIBUTE), 'kept for listeners');
    }

    public function testOtherArgumentsAreNotItsBusiness(): void
    {
        $resolver = new EventValueResolver();
        $argument = self::argument(type: Request::class);
        self::assertFalse($resolver->supports(self::message('hi'), $argument));
        self::assertSame([], [...$resolver->resolve(self::message('hi'), $argument)]);
    }

    public function testAPlainHttpRequestIsA400(): void
    {
        $this->expectException(BadRequestHttpException::class);
        [...(new EventValueResolver())->resolve(Request::create('/ws'), self::argument())];
    }

    public function testAPlainHttpRequestGivesNullToANullableArgument(): void
    {
        self::assertSame([null], [...(new EventValueResolver())->resolve(Request::create('/ws'), self::argument(nullable: true))]);
    }

    public function testAMalformedEventIsA400(): void
    {
        $request = new Request([], [], [], [], [], ['WS_EVENT' => 'teleport', 'WS_CONNECTION_ID' => 'c1']);
        $this->expectException(BadRequestHttpException::class);
        $this->expectExceptionMessage('teleport');
        [...(new EventValueResolver())->resolve($request, self::argument())];
    }
}
