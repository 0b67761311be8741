<?php

declare(strict_types=1);

namespace Ws2fcgi\Tests\Symfony;

use PHPUnit\Framework\TestCase;
use Symfony\Component\HttpFoundation\Request;
use Symfony\Component\HttpFoundation\Response as HttpResponse;
use Symfony\Component\HttpKernel\Event\ExceptionEvent;
use Symfony\Component\HttpKernel\Event\ViewEvent;
use Symfony\Component\HttpKernel\HttpKernelInterface;
use Ws2fcgi\Response;
use Ws2fcgi\Symfony\ResponseConverter;
use Ws2fcgi\Symfony\Ws2fcgiSubscriber;

final class ResponseConverterTest extends TestCase
{
    public function testStatusHeadersAndBodyCarryOver(): void
    {
        $symfony = ResponseConverter::toSymfony(
            Response::accept('welcome')->join('a', 'b')->meta('User', '42')->close(4000, 'bye')
                ->withHeader('Set-Cookie', 'x=1; Path=/')->withHeader('Set-Cookie', 'y=2; Path=/'),
        );
        self::assertSame(200, $symfony->getStatusCode());
        self::assertSame('welcome', $symfony->getContent());
        self::assertSame('a, b', $symfony->headers->get('X-WS-Join'));
        self::assertSame('42', $symfony->headers->get('X-WS-Meta-User'));
        self::assertSame('4000 bye', $symfony->headers->get('X-WS-Close'));
        $cookies = array_map(fn ($c) => $c->getName() . '=' . $c->getValue(), $symfony->headers->getCookies());
        self::assertSame(['x=1', 'y=2'], $cookies);
    }

    public function testAnEmptyMetaValueSurvives(): void
    {
        $symfony = ResponseConverter::toSymfony(Response::accept()->meta('nick', null));
        self::assertTrue($symfony->headers->has('X-WS-Meta-nick'));
        self::assertSame('', $symfony->headers->get('X-WS-Meta-nick'));
    }

    public function testARefusal(): void
    {
        $symfony = ResponseConverter::toSymfony(Response::refuse(409, 'taken'));
        self::assertSame(409, $symfony->getStatusCode());
        self::assertSame('taken', $symfony->getContent());
        self::assertSame('text/plain; charset=utf-8', $symfony->headers->get('Content-Type'));
    }

    public function testTheSubscriberConvertsAControllersResult(): void
    {
        $kernel = $this->createMock(HttpKernelInterface::class);
        $event = new ViewEvent($kernel, Request::create('/ws'), HttpKernelInterface::MAIN_REQUEST, Response::accept('x')->join('r'));
        (new Ws2fcgiSubscriber())->onView($event);
        self::assertSame('r', $event->getResponse()?->headers->get('X-WS-Join'));
    }

    public function testTheSubscriberClosesAMessageWhoseControllerThrew(): void
    {
        $kernel = $this->createMock(HttpKernelInterface::class);
        $request = new Request([], [], [], [], [], ['WS_EVENT' => 'message', 'WS_CONNECTION_ID' => 'c1']);
        $event = new ExceptionEvent($kernel, $request, HttpKernelInterface::MAIN_REQUEST, new \RuntimeException('x'));
        (new Ws2fcgiSubscriber())->onException($event);
        self::assertSame('1011 internal error', $event->getResponse()?->headers->get('X-WS-Close'));
        self::assertTrue($event->isAllowingCustomResponseCode(), 'the 200 must not become a 500');
    }

    public function testTheSubscriberLeavesOtherExceptionsToSymfony(): void
    {
        $kernel = $this->createMock(HttpKernelInterface::class);
        foreach ([Request::create('/page'), new Request([], [], [], [], [], ['WS_EVENT' => 'open', 'WS_CONNECTION_ID' => 'c1'])] as $request) {
            $event = new ExceptionEvent($kernel, $request, HttpKernelInterface::MAIN_REQUEST, new \RuntimeException('x'));
            (new Ws2fcgiSubscriber())->onException($event);
            self::assertNull($event->getResponse());
        }
        self::assertInstanceOf(HttpResponse::class, ResponseConverter::toSymfony(Response::accept()));
    }
}
