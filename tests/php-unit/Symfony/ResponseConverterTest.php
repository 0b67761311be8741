<?php

declare(strict_types=1);

namespace Ws2fcgi\Tests\Symfony;

use PHPUnit\Framework\TestCase;
use Symfony\Component\HttpFoundation\Request;
use Symfony\Component\HttpFoundation\Response as HttpResponse;
use Symfony\Component\HttpKernel\Event\ResponseEvent;
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

    private function answer(Request $request, HttpResponse $response): ?HttpResponse
    {
        $kernel = $this->createMock(HttpKernelInterface::class);
        $event = new ResponseEvent($kernel, $request, HttpKernelInterface::MAIN_REQUEST, $response);
        (new Ws2fcgiSubscriber())->onResponse($event);
        return $event->getResponse();
    }

    private static function message(): Request
    {
        return new Request([], [], [], [], [], ['WS_EVENT' => 'message', 'WS_CONNECTION_ID' => 'c1']);
    }

    public function testAMessageAnsweredWithA5xxClosesWith1011(): void
    {
        $answer = $this->answer(self::message(), new HttpResponse('<html>error page</html>', 500));
        self::assertSame(200, $answer?->getStatusCode());
        self::assertSame('1011 server error (500)', $answer?->headers->get('X-WS-Close'));
        self::assertSame('', $answer?->getContent());
    }

    public function testAMessageAnsweredWithA4xxOrARedirectClosesWith1008(): void
    {
        self::assertSame('1008 refused (403)', $this->answer(self::message(), new HttpResponse('', 403))?->headers->get('X-WS-Close'));
        self::assertSame('1008 refused (302)', $this->answer(self::message(), new HttpResponse('', 302))?->headers->get('X-WS-Close'));
    }

    public function testOtherAnswersAreLeftAlone(): void
    {
        $ok = new HttpResponse('reply', 200);
        self::assertSame($ok, $this->answer(self::message(), $ok));
        $refusal = new HttpResponse('log in first', 403);
        $open = new Request([], [], [], [], [], ['WS_EVENT' => 'open', 'WS_CONNECTION_ID' => 'c1']);
        self::assertSame($refusal, $this->answer($open, $refusal), 'an open keeps its refusal');
        $page = new HttpResponse('not found', 404);
        self::assertSame($page, $this->answer(Request::create('/page'), $page), 'ordinary pages are not touched');
    }
}
