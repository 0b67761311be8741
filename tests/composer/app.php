<?php
// An application's script, installed with Composer: Composer's autoloader
// loads the ws2fcgi/ws2fcgi package. Run by client.py with the control
// socket and the id of a connection client.py holds open:
//
//   php app.php CONTROL_SOCKET CONNECTION_ID
//
// Prints one line per check; exit 1 if any failed. The connection gets
// "direct", then "to the channel", then a close frame 4000 "bye from the app".

declare(strict_types=1);

require __DIR__ . '/vendor/autoload.php';

use Ws2fcgi\Client;
use Ws2fcgi\ClientInterface;
use Ws2fcgi\Exception\ConnectException;
use Ws2fcgi\Exception\DaemonException;

[, $socket, $id] = $argv + [null, '', ''];
$nobody = str_repeat('0', 40);
$failed = 0;

function check(string $what, bool $ok, string $detail = ''): void
{
    global $failed;
    echo ($ok ? 'ok      ' : 'FAILED  '), $what, $ok || $detail === '' ? '' : ": $detail", "\n";
    $failed += $ok ? 0 : 1;
}

/** The exception $fn throws, or null. */
function thrown(callable $fn): ?Throwable
{
    try {
        $fn();
    } catch (Throwable $e) {
        return $e;
    }
    return null;
}

check('the autoloader is Composer\'s', !str_contains((string) (new ReflectionClass(Client::class))->getFileName(), '/php/Ws2fcgi.php'));
$ws = new Client($socket);
check('Client implements ClientInterface', $ws instanceof ClientInterface);
check('join: found (already a member: still true)', $ws->join($id, 'news') === true);
check('join of an unknown connection: not found', $ws->join($nobody, 'news') === false);
$members = array_column($ws->presence('news'), 'id');
check('presence lists the connection', $members === [$id], json_encode($members));
check('meta: found', $ws->meta($id, ['plan' => 'pro']) === true);
$meta = $ws->presence('news')[0]['meta'] ?? [];
ksort($meta);
// The open answer's "user" was deleted by the handler's "forget" before this runs.
check('presence shows the metadata', $meta === ['plan' => 'pro'], json_encode($meta));
check('send: delivered to 1', $ws->send($id, 'direct') === 1);
check('publish: delivered to 1', $ws->publish('news', 'to the channel') === 1);
check('publish except the member: 0', $ws->publish('news', 'skipped', except: $id) === 0);
check('leave: found', $ws->leave($id, 'news') === true);
check('publish after leave: 0', $ws->publish('news', 'nobody') === 0);

$e = thrown(fn () => $ws->close($id, 1006));
check('a close code the daemon refuses: DaemonException', $e instanceof DaemonException, $e ? get_class($e) . ': ' . $e->getMessage() : 'none');
check('its message is the daemon\'s error', $e instanceof DaemonException && str_contains($e->getDaemonError(), '1006'));
$e = thrown(fn () => $ws->pusherPublish('no-such-app', 'orders', 'created', ['id' => 7]));
check('pusherPublish to an unknown app: DaemonException', $e instanceof DaemonException, $e ? $e->getMessage() : 'none');
$e = thrown(fn () => (new Client($socket . '.missing'))->stats());
check('a socket nobody listens on: ConnectException', $e instanceof ConnectException, $e ? get_class($e) : 'none');
check('stats counts the connection', ($ws->stats()['connections'] ?? null) === 1);
check('close: closed', $ws->close($id, 4000, 'bye from the app') === true);
check('close again: not closed', $ws->close($id) === false);

exit($failed === 0 ? 0 : 1);
