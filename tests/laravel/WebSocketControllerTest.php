<?php

declare(strict_types=1);

namespace Ws2fcgi\Tests\Laravel;

use PHPUnit\Framework\TestCase;
use Symfony\Component\HttpFoundation\Response as HttpResponse;
use Ws2fcgi\Laravel\WebSocketController;
use Ws2fcgi\Response;

/** A handler's answer as the HTTP response ws2fcgi reads. */
final class WebSocketControllerTest extends TestCase
{
    public function testTheBuilderBecomesStatusDirectivesAndBody(): void
    {
        $http = WebSocketController::toHttp(Response::accept('hi')->join('a', 'b')->meta('user-id', 7)->close(4000, 'bye'));

        self::assertSame(200, $http->getStatusCode());
        self::assertSame('hi', $http->getContent());
        self::assertSame('a, b', $http->headers->get('X-WS-Join'));
        self::assertSame('7', $http->headers->get('X-WS-Meta-User-Id'));
        self::assertSame('4000 bye', $http->headers->get('X-WS-Close'));
    }

    public function testARefusalKeepsItsStatusAndHeaders(): void
    {
        $http = WebSocketController::toHttp(Response::refuse(403, 'log in first')->withHeader('Set-Cookie', 'a=1'));

        self::assertSame(403, $http->getStatusCode());
        self::assertStringContainsString('log in first', (string) $http->getContent());
        // Symfony parses Set-Cookie into a Cookie (which adds its default path).
        self::assertStringStartsWith('a=1;', (string) $http->headers->get('Set-Cookie'));
    }

    public function testNullAcceptsAndAnHttpResponsePassesAsItIs(): void
    {
        self::assertSame(200, WebSocketController::toHttp(null)->getStatusCode());
        self::assertSame('', WebSocketController::toHttp(null)->getContent());
        $own = new HttpResponse('x', 409);
        self::assertSame($own, WebSocketController::toHttp($own));
    }
}
