<?php

declare(strict_types=1);

namespace Ws2fcgi\Tests\Laravel;

use Illuminate\Contracts\Http\Kernel as HttpKernel;
use Illuminate\Http\Request;
use Illuminate\Support\Facades\Facade;
use PHPUnit\Framework\TestCase;
use Symfony\Component\HttpFoundation\Response;
use Ws2fcgi\Laravel\EventKernel;

/**
 * EventKernel in the example app (php-example/laravel), in this process: each
 * request a fresh Application, as each PHP-FPM request is, with the cookies the
 * earlier answers set. What ws2fcgi would send is built by hand here; the same
 * paths run through the real daemon in scripts/laravel --check.
 */
final class ExampleAppTest extends TestCase
{
    private const APP = __DIR__ . '/../../php-example/laravel';

    private static string $run;

    /** @var array<string, string> the cookie jar of the person logged in */
    private array $cookies = [];

    public static function setUpBeforeClass(): void
    {
        self::$run = sys_get_temp_dir() . '/ws2fcgi-laravel-test-' . bin2hex(random_bytes(4));
        foreach (['cache', 'storage/logs', 'storage/framework/sessions', 'storage/framework/views', 'storage/framework/cache/data'] as $dir) {
            mkdir(self::$run . '/' . $dir, 0700, true);
        }
        file_put_contents(self::$run . '/.env', implode("\n", [
            'APP_KEY=base64:' . base64_encode(random_bytes(32)),
            'PUSHER_APP_ID=1001', 'PUSHER_APP_KEY=app-key', 'PUSHER_APP_SECRET=app-secret',
            'WS2FCGI_CONTROL_SOCKET=' . self::$run . '/no-daemon.sock',
        ]) . "\n");
        // Package discovery without Composer: the manifest Laravel would build.
        file_put_contents(self::$run . '/cache/packages.php', '<?php return ' . var_export(
            ['ws2fcgi/ws2fcgi' => ['providers' => [\Ws2fcgi\Laravel\Ws2fcgiServiceProvider::class]]],
            true,
        ) . ';');
        $_SERVER['LARAVEL_RUN_DIR'] = self::$run;
        spl_autoload_register(static function (string $class): void {
            if (str_starts_with($class, 'App\\')) {
                $file = self::APP . '/app/' . str_replace('\\', '/', substr($class, 4)) . '.php';
                if (is_file($file)) {
                    require $file;
                }
            }
        });
    }

    public static function tearDownAfterClass(): void
    {
        unset($_SERVER['LARAVEL_RUN_DIR']);
        exec('rm -rf ' . escapeshellarg(self::$run));
    }

    private function app(): \Illuminate\Foundation\Application
    {
        Facade::clearResolvedInstances();
        foreach (['PACKAGES', 'SERVICES', 'CONFIG', 'ROUTES', 'EVENTS'] as $name) {
            unset($_SERVER['APP_' . $name . '_CACHE']);
        }

        return require self::APP . '/bootstrap/app.php';
    }

    /** An ordinary page request through the HTTP kernel; keeps the cookies it sets. */
    private function page(string $method, string $uri, array $form = []): Response
    {
        $app = $this->app();
        $response = $app->make(HttpKernel::class)->handle(Request::create($uri, $method, $form, $this->cookies));
        $this->keepCookies($response);

        return $response;
    }

    private function keepCookies(Response $response): void
    {
        foreach ($response->headers->getCookies() as $cookie) {
            $this->cookies[$cookie->getName()] = (string) $cookie->getValue();
        }
    }

    private function login(string $email): void
    {
        $this->cookies = [];
        preg_match('/name="_token" value="([^"]+)"/', (string) $this->page('GET', '/login')->getContent(), $m);
        $answer = $this->page('POST', '/login', ['_token' => $m[1], 'email' => $email, 'password' => 'secret']);
        self::assertSame(302, $answer->getStatusCode());
        self::assertStringEndsWith('/rooms/lobby', (string) $answer->headers->get('Location'));
    }

    /**
     * A ws2fcgi event as ws.php receives it: the handshake's request with the
     * event's variables and body.
     *
     * @param array<string, string> $vars
     */
    private function event(string $method, string $uri, array $vars, string $body = ''): Response
    {
        $app = $this->app();
        $server = ['WS_CONNECTION_ID' => 'c1'] + $vars + ['HTTP_HOST' => 'localhost'];
        if ($method === 'POST') {
            $server['CONTENT_TYPE'] = 'text/plain; charset=utf-8';
        }
        $request = Request::create($uri, $method, [], $this->cookies, [], $server, $body);
        [, $response] = (new EventKernel($app))->handle($app->make(HttpKernel::class), $request);

        return $response;
    }

    private function subscribe(string $channel, string $body = ''): Response
    {
        return $this->event('POST', '/app/app-key?protocol=7', [
            'WS_EVENT' => 'subscribe', 'WS_PUSHER_APP_ID' => '1001', 'WS_PUSHER_SOCKET_ID' => '12.34', 'WS_PUSHER_CHANNEL' => $channel,
        ], $body);
    }

    public function testAPresenceSubscriptionIsAnsweredWithTheSessionsUser(): void
    {
        $this->login('alice@example.com');
        // What the client wrote is ignored: the member is the session's user.
        $answer = $this->subscribe('presence-room.lobby', '{"user_id":2}');

        self::assertSame(200, $answer->getStatusCode());
        self::assertSame('{"user_id":1,"user_info":{"id":1,"name":"Alice"}}', $answer->getContent());
    }

    public function testAPrivateSubscriptionIsAcceptedWithAnEmptyBody(): void
    {
        $this->login('alice@example.com');
        $answer = $this->subscribe('private-user.1');

        self::assertSame(200, $answer->getStatusCode());
        self::assertSame('', $answer->getContent());
    }

    public function testChannelsTheCallbacksRefuseAreRefusedWith403(): void
    {
        $this->login('carol@example.com');
        self::assertSame(403, $this->subscribe('presence-room.staff')->getStatusCode());
        self::assertSame(403, $this->subscribe('private-user.1')->getStatusCode());
        self::assertSame(403, $this->subscribe('private-nothing-names-it')->getStatusCode());
        self::assertSame(200, $this->subscribe('private-user.3')->getStatusCode());
    }

    public function testAGuestIsRefused(): void
    {
        $this->cookies = [];
        self::assertSame(403, $this->subscribe('private-user.1')->getStatusCode());
        self::assertSame(403, $this->subscribe('presence-room.lobby')->getStatusCode());
    }

    public function testOtherPusherEventsAreAcceptedWithoutTheApp(): void
    {
        foreach (['open', 'client_event', 'close', 'member_added'] as $event) {
            $answer = $this->event('GET', '/app/app-key', ['WS_EVENT' => $event, 'WS_PUSHER_APP_ID' => '1001', 'WS_PUSHER_SOCKET_ID' => '12.34']);
            self::assertSame(200, $answer->getStatusCode(), $event);
        }
    }

    public function testAMessageEventPassesTheCsrfCheckAndIsEchoed(): void
    {
        $this->cookies = [];
        $answer = $this->event('POST', '/ws/echo', ['WS_EVENT' => 'message', 'WS_MESSAGE_TYPE' => 'text'], 'hello');

        self::assertSame(200, $answer->getStatusCode());
        self::assertSame('hello', $answer->getContent());
    }

    public function testTheCsrfCheckStaysForOrdinaryRequests(): void
    {
        $this->login('alice@example.com');
        // A page POST without the token, after a WebSocket event in an earlier request.
        $this->event('POST', '/ws/echo', ['WS_EVENT' => 'message', 'WS_MESSAGE_TYPE' => 'text'], 'x');
        self::assertSame(419, $this->page('POST', '/rooms/lobby/messages', ['text' => 'no token'])->getStatusCode());
    }

    public function testTheSessionIsNotWrittenByAWebSocketEvent(): void
    {
        $this->login('alice@example.com');
        $files = glob(self::$run . '/storage/framework/sessions/*');
        $before = array_map(fn ($f) => [$f, md5_file($f)], $files);
        $this->event('GET', '/ws/me', ['WS_EVENT' => 'open']);
        $this->event('POST', '/ws/me', ['WS_EVENT' => 'message', 'WS_MESSAGE_TYPE' => 'text', 'WS_META_USER_ID' => '1'], 'whoami');
        self::assertSame($before, array_map(fn ($f) => [$f, md5_file($f)], glob(self::$run . '/storage/framework/sessions/*')));
    }

    public function testTheHandlerSeesTheUserAndItsAnswerCarriesDirectives(): void
    {
        $this->login('alice@example.com');
        $open = $this->event('GET', '/ws/me', ['WS_EVENT' => 'open', 'HTTP_ORIGIN' => 'http://localhost']);
        self::assertSame(200, $open->getStatusCode());
        self::assertSame('{"hello":"Alice"}', $open->getContent());
        self::assertSame('1', $open->headers->get('X-WS-Meta-User-Id'));

        $who = $this->event('POST', '/ws/me', ['WS_EVENT' => 'message', 'WS_MESSAGE_TYPE' => 'text', 'WS_META_USER_ID' => '1'], 'whoami');
        self::assertSame('{"name":"Alice","id":1}', $who->getContent());
    }

    public function testAHandlerExceptionClosesWith1011AndIsLogged(): void
    {
        $this->login('alice@example.com');
        $answer = $this->event('POST', '/ws/me', ['WS_EVENT' => 'message', 'WS_MESSAGE_TYPE' => 'text'], 'nonsense');

        self::assertSame(200, $answer->getStatusCode());
        self::assertSame('1011 server error (500)', $answer->headers->get('X-WS-Close'));
        $log = (string) file_get_contents(self::$run . '/storage/logs/laravel.log');
        self::assertStringContainsString('ws/me understands "whoami" only', $log);
        self::assertStringContainsString('WebSocket message event failed; closing the connection', $log);
    }

    public function testAGuestMessageIsClosedWith1008AndAGuestOpenRefused(): void
    {
        $this->cookies = [];
        self::assertSame(302, $this->event('GET', '/ws/me', ['WS_EVENT' => 'open'])->getStatusCode());
        $answer = $this->event('POST', '/ws/me', ['WS_EVENT' => 'message', 'WS_MESSAGE_TYPE' => 'text'], 'whoami');
        self::assertSame('1008 refused (302)', $answer->headers->get('X-WS-Close'));
    }

    public function testAForeignOriginIsRefusedAtTheHandshake(): void
    {
        $answer = $this->event('GET', '/ws/echo', ['WS_EVENT' => 'open', 'HTTP_ORIGIN' => 'http://evil.example']);
        self::assertSame(403, $answer->getStatusCode());
        self::assertSame(200, $this->event('GET', '/ws/echo', ['WS_EVENT' => 'open', 'HTTP_ORIGIN' => 'http://localhost'])->getStatusCode());
    }

    public function testNoDaemonFailsTheBroadcastNotThePage(): void
    {
        $this->login('alice@example.com');
        $page = $this->page('GET', '/rooms/lobby');
        self::assertSame(200, $page->getStatusCode());
        preg_match('/name="csrf-token" content="([^"]+)"/', (string) $page->getContent(), $m);

        $answer = $this->page('POST', '/rooms/lobby/messages', ['_token' => $m[1], 'text' => 'hello']);

        self::assertSame(500, $answer->getStatusCode());
        $log = (string) file_get_contents(self::$run . '/storage/logs/laravel.log');
        self::assertStringContainsString('BroadcastException', $log);
        self::assertStringContainsString('no-daemon.sock', $log);
    }

    public function testARequestWithoutAnEventGets404(): void
    {
        $app = $this->app();
        [, $answer] = (new EventKernel($app))->handle($app->make(HttpKernel::class), Request::create('/ws/echo', 'POST'));
        self::assertSame(404, $answer->getStatusCode());
        // And the route itself answers 404 to a plain request through the page kernel.
        self::assertSame(404, $this->page('GET', '/ws/echo')->getStatusCode());
    }
}
