<?php

declare(strict_types=1);

namespace Ws2fcgi\Tests;

use PHPUnit\Framework\TestCase;
use Ws2fcgi\Client;
use Ws2fcgi\ClientInterface;
use Ws2fcgi\Exception\ConnectException;
use Ws2fcgi\Exception\DaemonException;
use Ws2fcgi\Exception\EncodingException;
use Ws2fcgi\Exception\ProtocolException;
use Ws2fcgi\Exception\TimeoutException;
use Ws2fcgi\Exception\Ws2fcgiException;

/**
 * The client's contract as an app sees it: the interface, the bool results,
 * and one exception class per failure kind. It talks to the fake control
 * server of tests/php-client (fake_server.php), which misbehaves on request;
 * tests/php-client/ClientTest.php covers the wire format, reconnects and
 * retries in depth, tests/control.rs and tests/composer the real daemon.
 */
final class ClientTest extends TestCase
{
    /** @var resource|null */
    private static $server = null;

    /** @var array<int, resource> */
    private static array $pipes = [];

    private static string $dir = '';

    public static function setUpBeforeClass(): void
    {
        self::$dir = \sys_get_temp_dir() . '/ws2fcgi-phpunit-' . \getmypid() . '-' . \bin2hex(\random_bytes(3));
        \mkdir(self::$dir, 0700);
        self::$server = \proc_open(
            [\PHP_BINARY, __DIR__ . '/../php-client/fake_server.php', self::$dir . '/control.sock', self::$dir . '/log'],
            [0 => ['pipe', 'r'], 1 => ['pipe', 'w'], 2 => \STDERR],
            self::$pipes,
        );
        $read = [self::$pipes[1]];
        $write = $except = null;
        if (\stream_select($read, $write, $except, 10) !== 1 || \trim((string) \fgets(self::$pipes[1])) !== 'ready') {
            self::fail('fake_server.php did not become ready');
        }
    }

    public static function tearDownAfterClass(): void
    {
        foreach (self::$pipes as $pipe) {
            \fclose($pipe); // stdin EOF: the fake server exits
        }
        if (\is_resource(self::$server)) {
            \proc_close(self::$server);
        }
        foreach (\glob(self::$dir . '/*') ?: [] as $file) {
            \unlink($file);
        }
        @\rmdir(self::$dir);
    }

    private static function client(float $timeout = 2.0): Client
    {
        return new Client(self::$dir . '/control.sock', $timeout, persistent: false);
    }

    public function testItIsAClientInterface(): void
    {
        self::assertInstanceOf(ClientInterface::class, self::client());
    }

    public function testJoinLeaveMetaAndCloseSayWhetherTheConnectionWasFound(): void
    {
        $ws = self::client();
        self::assertTrue($ws->join('c1', 'room'));
        self::assertFalse($ws->join('gone', 'room'));
        self::assertTrue($ws->leave('c1', 'room'));
        self::assertFalse($ws->leave('gone', 'room'));
        self::assertTrue($ws->meta('c1', ['user' => '42']));
        self::assertFalse($ws->meta('gone', ['user' => '42']));
        self::assertTrue($ws->close('c1'));
        self::assertFalse($ws->close('gone'));
    }

    public function testARefusalIsADaemonExceptionWithTheDaemonsError(): void
    {
        try {
            self::client()->request(['op' => 'nope']);
            self::fail('no exception');
        } catch (DaemonException $e) {
            self::assertSame('unknown op `nope`', $e->getDaemonError());
            self::assertSame(['ok' => false, 'error' => 'unknown op `nope`'], $e->getReply());
            self::assertInstanceOf(\Ws2fcgi\Exception::class, $e, 'old catch blocks still catch it');
        }
    }

    public function testNoDaemonIsAConnectException(): void
    {
        $this->expectException(ConnectException::class);
        (new Client(self::$dir . '/nobody.sock'))->stats();
    }

    public function testNoReplyInTimeIsATimeoutException(): void
    {
        $this->expectException(TimeoutException::class);
        self::client(0.3)->request(['op' => '__sleep', 'ms' => 1500]);
    }

    public function testAReplyThatIsNotJsonIsAProtocolException(): void
    {
        $this->expectException(ProtocolException::class);
        self::client()->request(['op' => '__garbage']);
    }

    public function testAConnectionClosedAfterTheRequestIsAProtocolException(): void
    {
        $this->expectException(ProtocolException::class);
        $this->expectExceptionMessage('may or may not have been applied');
        self::client()->request(['op' => '__die']);
    }

    public function testTextThatIsNotUtf8IsAnEncodingExceptionAndNothingIsSent(): void
    {
        try {
            self::client()->publish('room', "\xff");
            self::fail('no exception');
        } catch (EncodingException $e) {
            self::assertStringContainsString('binary: true', $e->getMessage());
            self::assertInstanceOf(Ws2fcgiException::class, $e);
        }
    }
}
