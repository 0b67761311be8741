<?php

declare(strict_types=1);

namespace Ws2fcgi\Tests;

use PHPUnit\Framework\TestCase;
use Ws2fcgi\Response;

final class ResponseTest extends TestCase
{
    public function testAcceptIsA200WithItsBodyAndNoHeaders(): void
    {
        self::assertSame(
            ['status' => 200, 'headers' => [], 'body' => 'welcome'],
            Response::accept('welcome')->toArray(),
        );
    }

    public function testDirectivesInTheOrderTheDaemonAppliesThem(): void
    {
        $response = Response::accept('hi')
            ->join('room', 'lobby')
            ->meta('User-Id', 42)
            ->leave('hall')
            ->join('more')
            ->close(4000, 'room closed');
        self::assertSame([
            'X-WS-Leave' => ['hall'],
            'X-WS-Join' => ['room, lobby, more'],
            'X-WS-Meta-User-Id' => ['42'],
            'X-WS-Close' => ['4000 room closed'],
        ], $response->headers());
        self::assertSame(200, $response->status());
        self::assertSame('hi', $response->body());
    }

    public function testItIsImmutable(): void
    {
        $base = Response::accept();
        $joined = $base->join('room');
        self::assertSame([], $base->headers());
        self::assertSame(['X-WS-Join' => ['room']], $joined->headers());
    }

    public function testMetaNullOrEmptyDeletesWithAnEmptyValue(): void
    {
        self::assertSame(['X-WS-Meta-Nick' => ['']], Response::accept()->meta('Nick', null)->headers());
        self::assertSame(['X-WS-Meta-Nick' => ['']], Response::accept()->meta('Nick', '')->headers());
    }

    public function testMetaKeepsOneEntryPerNameWhateverItsSpelling(): void
    {
        $response = Response::accept()->meta('user-id', '1')->meta('USER_ID', '2');
        self::assertSame(['X-WS-Meta-USER_ID' => ['2']], $response->headers());
    }

    public function testMetaValuesAreTrimmedAsTheDaemonWould(): void
    {
        self::assertSame(['X-WS-Meta-a' => ['x y']], Response::accept()->meta('a', ' x y ')->headers());
    }

    public function testABinaryReply(): void
    {
        $response = Response::accept()->reply("\x00\x01", binary: true);
        self::assertSame(['Content-Type' => ['application/octet-stream']], $response->headers());
        self::assertSame("\x00\x01", $response->body());
        self::assertSame([], $response->reply('text')->headers(), 'a text reply drops the binary type');
    }

    public function testRefuseSetsTheStatusAndAPlainTextReason(): void
    {
        self::assertSame(
            ['status' => 403, 'headers' => ['Content-Type' => ['text/plain; charset=utf-8']], 'body' => 'log in first'],
            Response::refuse(403, 'log in first')->toArray(),
        );
        self::assertSame(['status' => 401, 'headers' => [], 'body' => ''], Response::refuse(401)->toArray());
    }

    public function testARefusalCarriesHeadersButNoDirectives(): void
    {
        $refused = Response::refuse(403)->withHeader('Set-Cookie', 'a=1')->withHeader('Set-Cookie', 'b=2');
        self::assertSame(['Set-Cookie' => ['a=1', 'b=2']], $refused->headers());
        $this->expectException(\LogicException::class);
        $this->expectExceptionMessage('2xx answers only');
        $refused->join('room');
    }

    /** @return iterable<string, array{int}> */
    public static function statusesThatDoNotRefuse(): iterable
    {
        yield '101' => [101];
        yield '200' => [200];
        yield '204' => [204];
        yield '600' => [600];
    }

    /** @dataProvider statusesThatDoNotRefuse */
    public function testRefuseNeedsARefusingStatus(int $status): void
    {
        $this->expectException(\InvalidArgumentException::class);
        Response::refuse($status);
    }

    /** @return iterable<string, array{string}> */
    public static function badChannels(): iterable
    {
        yield 'empty' => [''];
        yield 'comma' => ['a,b'];
        yield 'newline' => ["a\nb"];
        yield 'control character' => ["a\x01"];
        yield 'surrounding space' => [' a'];
        yield '201 bytes' => [\str_repeat('c', 201)];
    }

    /** @dataProvider badChannels */
    public function testAChannelNameTheDaemonWouldSkipIsRefusedHere(string $channel): void
    {
        $this->expectException(\InvalidArgumentException::class);
        Response::accept()->join($channel);
    }

    public function testAChannelOf200BytesIsFine(): void
    {
        $name = \str_repeat('c', 200);
        self::assertSame(['X-WS-Leave' => [$name]], Response::accept()->leave($name)->headers());
    }

    /** @return iterable<string, array{string, string}> */
    public static function badMeta(): iterable
    {
        yield 'name with a space' => ['a b', 'x'];
        yield 'empty name' => ['', 'x'];
        yield 'name of 65 bytes' => [\str_repeat('n', 65), 'x'];
        yield 'value with a line break (header injection)' => ['nick', "ada\r\nX-WS-Join: admin"];
        yield 'value over 4096 bytes' => ['nick', \str_repeat('v', 4097)];
        yield 'value not UTF-8' => ['nick', "\xff"];
    }

    /** @dataProvider badMeta */
    public function testMetaTheDaemonWouldSkipIsRefusedHere(string $name, string $value): void
    {
        $this->expectException(\InvalidArgumentException::class);
        Response::accept()->meta($name, $value);
    }

    /** @return iterable<string, array{int, string}> */
    public static function badCloses(): iterable
    {
        yield '1006 (reserved)' => [1006, ''];
        yield '1015 (reserved)' => [1015, ''];
        yield '999' => [999, ''];
        yield '5000' => [5000, ''];
        yield 'reason of 124 bytes' => [4000, \str_repeat('r', 124)];
        yield 'reason not UTF-8' => [4000, "\xff"];
        yield 'reason with a line break' => [4000, "a\nb"];
    }

    /** @dataProvider badCloses */
    public function testACloseTheDaemonWouldSkipIsRefusedHere(int $code, string $reason): void
    {
        $this->expectException(\InvalidArgumentException::class);
        Response::accept()->close($code, $reason);
    }

    public function testCloseWithoutAReasonIsTheCodeAlone(): void
    {
        self::assertSame(['X-WS-Close' => ['1000']], Response::accept()->close()->headers());
        self::assertSame(['X-WS-Close' => ['1011 ' . \str_repeat('r', 123)]], Response::accept()->close(1011, \str_repeat('r', 123))->headers());
    }

    public function testAPresenceMemberForAPusherSubscription(): void
    {
        $response = Response::accept()->presence(42, ['name' => 'Ada']);
        self::assertSame('{"user_id":"42","user_info":{"name":"Ada"}}', $response->body());
        self::assertSame(['Content-Type' => ['application/json']], $response->headers());
        self::assertSame('{"user_id":"u1"}', Response::accept()->presence('u1')->body());
    }

    public function testAPresenceMemberNeedsAUserId(): void
    {
        $this->expectException(\InvalidArgumentException::class);
        Response::accept()->presence('');
    }

    public function testWithHeaderRefusesDirectivesAndLineBreaks(): void
    {
        self::assertSame(
            ['Sec-WebSocket-Protocol' => ['chat.v2']],
            Response::accept()->withHeader('Sec-WebSocket-Protocol', 'chat.v2')->headers(),
        );
        foreach ([['X-WS-Join', 'room'], ['Bad Name', 'x'], ['Set-Cookie', "a=1\r\nX-WS-Join: admin"]] as [$name, $value]) {
            try {
                Response::accept()->withHeader($name, $value);
                self::fail("$name accepted");
            } catch (\InvalidArgumentException) {
                self::addToAssertionCount(1);
            }
        }
    }
}
