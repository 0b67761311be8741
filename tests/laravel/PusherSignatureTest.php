<?php

declare(strict_types=1);

namespace Ws2fcgi\Tests\Laravel;

use PHPUnit\Framework\TestCase;
use Ws2fcgi\Laravel\PusherSignature;

/** The signatures against the worked examples of Pusher's documentation. */
final class PusherSignatureTest extends TestCase
{
    private const KEY = '278d425bdf160c739803';
    private const SECRET = '7ad3773142a6692b25b8';

    public function testPrivateChannelAsPusherDocumentsIt(): void
    {
        $answer = (new PusherSignature(self::KEY, self::SECRET))->privateChannel('private-foobar', '1234.1234');

        self::assertSame(['auth' => self::KEY . ':58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4'], $answer);
    }

    public function testPresenceChannelSignsTheChannelData(): void
    {
        $answer = (new PusherSignature(self::KEY, self::SECRET))
            ->presenceChannel('presence-foobar', '1234.1234', 10, ['name' => 'Mr. Channels']);

        self::assertSame('{"user_id":10,"user_info":{"name":"Mr. Channels"}}', $answer['channel_data']);
        self::assertSame(self::KEY . ':31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80', $answer['auth']);
    }

    public function testEmptyUserInfoIsLeftOutAsPusherHttpPhpDoes(): void
    {
        $answer = (new PusherSignature(self::KEY, self::SECRET))->presenceChannel('presence-a', '1.2', '7', []);

        self::assertSame('{"user_id":"7"}', $answer['channel_data']);
    }

    public function testSocketIds(): void
    {
        self::assertTrue(PusherSignature::isSocketId('1234.1234'));
        foreach (['', '1234', '1.2.3', 'a.1', "1.2\n", ' 1.2', '1.2:x'] as $bad) {
            self::assertFalse(PusherSignature::isSocketId($bad), var_export($bad, true));
        }
    }

    public function testAnEmptySecretIsRefused(): void
    {
        $this->expectException(\InvalidArgumentException::class);
        new PusherSignature(self::KEY, '');
    }
}
