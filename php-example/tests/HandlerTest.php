<?php
// PHP-level tests of the chat: the nickname, room and message rules (pure
// functions shared by ws.php and check.php) and the SQLite history against a
// temporary file. Plain PHP, no PHPUnit:
//
//   php php-example/tests/HandlerTest.php
//
// The last line is "N passed, N failed"; the exit status is non-zero on failure.

declare(strict_types=1);

require __DIR__ . '/../lib/Chat.php';

use Chat\Chat;
use Chat\History;
use Chat\Rules;

$passed = 0;
$failed = 0;

function check(string $name, bool $ok, string $detail = ''): void
{
    global $passed, $failed;
    if ($ok) {
        $passed++;
        echo "ok      $name\n";
    } else {
        $failed++;
        echo "FAILED  $name" . ($detail === '' ? '' : ": $detail") . "\n";
    }
}

function same(string $name, mixed $expected, mixed $actual): void
{
    check($name, $expected === $actual, 'expected ' . var_export($expected, true) . ', got ' . var_export($actual, true));
}

// --- nicknames ----------------------------------------------------------------

foreach (['alice', 'Bob_2', 'x', 'mary jane', 'a.b-c', str_repeat('n', Rules::MAX_NICK)] as $nick) {
    same("nick '$nick' is accepted", null, Rules::nickProblem($nick));
}
$refused = [
    'empty' => ['', 'choose a nickname'],
    'one over the limit' => [str_repeat('n', Rules::MAX_NICK + 1), 'at most 32'],
    'markup' => ['<b>', 'only letters'],
    'quote' => ['o"neil', 'only letters'],
    'double space' => ['mary  jane', 'only letters'],
    'trailing space' => ['alice ', 'only letters'],
    'tab' => ["al\tice", 'only letters'],
    'newline (header injection)' => ["alice\r\nX-WS-Join: other", 'only letters'],
    'trailing newline' => ["alice\n", 'only letters'],
    'non-ASCII lookalike' => ["\u{0430}lice", 'only letters'],
    'comma' => ['a,b', 'only letters'],
];
foreach ($refused as $what => [$nick, $why]) {
    $problem = Rules::nickProblem($nick);
    check("nick refused: $what", $problem !== null && str_contains($problem, $why), var_export($problem, true));
}
same('nick is trimmed before the rules', 'alice', Rules::normalizeNick("  alice\n"));

// --- rooms --------------------------------------------------------------------

same('room lobby is accepted', null, Rules::roomProblem('lobby'));
same('room with - and _ is accepted', null, Rules::roomProblem('team-2_a'));
check('empty room refused', Rules::roomProblem('') !== null);
check('long room refused', Rules::roomProblem(str_repeat('r', Rules::MAX_ROOM + 1)) !== null);
check('room with a comma refused (channel lists are comma-separated)', Rules::roomProblem('a,b') !== null);
check('room with a space refused', Rules::roomProblem('a b') !== null);
same('channel of a room', 'room:lobby', Chat::channel('lobby'));

// --- who may take a nickname ----------------------------------------------------

$members = [
    ['id' => 'c1', 'nick' => 'alice', 'owner' => 'owner-a'],
    ['id' => 'c2', 'nick' => 'bob', 'owner' => 'owner-b'],
];
same('a free nickname', ['taken' => false, 'replace' => []], Rules::nickConflict('carol', 'owner-c', $members));
same('taken by someone else', ['taken' => true, 'replace' => []], Rules::nickConflict('alice', 'owner-c', $members));
same('taken, compared case-insensitively', ['taken' => true, 'replace' => []], Rules::nickConflict('ALICE', 'owner-c', $members));
same('taken, and no owner cookie', ['taken' => true, 'replace' => []], Rules::nickConflict('alice', '', $members));
same('own nickname (reload, other tab): take over', ['taken' => false, 'replace' => ['c1']], Rules::nickConflict('Alice', 'owner-a', $members));
same('empty room', ['taken' => false, 'replace' => []], Rules::nickConflict('alice', '', []));
same(
    'presence reply to members, connections without a nick skipped',
    [['id' => 'c1', 'nick' => 'alice', 'owner' => 'h']],
    Chat::members([['id' => 'c1', 'meta' => ['nick' => 'alice', 'room' => 'r', 'owner' => 'h']], ['id' => 'c9', 'meta' => []]])
);
same('no cookie, no owner', '', Chat::owner([]));
same('a malformed cookie is no owner', '', Chat::owner([Chat::OWNER_COOKIE => 'not-hex']));
same('the owner is a hash of the cookie', hash('sha256', str_repeat('ab', 16)), Chat::owner([Chat::OWNER_COOKIE => str_repeat('ab', 16)]));

// --- messages -----------------------------------------------------------------

$say = fn (mixed $text): string => json_encode(['type' => 'say', 'text' => $text]);
same('a message', ['hello', null], Rules::parseSay($say('hello')));
same('text is trimmed', ['hi there', null], Rules::parseSay($say("  hi there \n")));
same('newlines and tabs are kept inside', ["line 1\n\tline 2", null], Rules::parseSay($say("line 1\n\tline 2")));
same('markup is just text here', ['<script>alert(1)</script>', null], Rules::parseSay($say('<script>alert(1)</script>')));
same('unicode text', ['héllo 👋', null], Rules::parseSay($say('héllo 👋')));
same('exactly the limit', [str_repeat('x', Rules::MAX_TEXT_BYTES), null], Rules::parseSay($say(str_repeat('x', Rules::MAX_TEXT_BYTES))));
$bad = [
    'one byte over the text limit' => [$say(str_repeat('x', Rules::MAX_TEXT_BYTES + 1)), 'at most 2000 bytes'],
    'over the limit in multi-byte characters' => [$say(str_repeat('é', 1001)), 'at most 2000 bytes'],
    'raw message too large' => [str_repeat(' ', Rules::MAX_RAW_BYTES + 1), 'too large'],
    'not JSON' => ['hello', 'must be JSON'],
    'truncated JSON' => ['{"type":"say","text":"hi"', 'must be JSON'],
    'a JSON string' => ['"hello"', 'must be {"type":"say"'],
    'a JSON list' => ['["say","hi"]', 'must be {"type":"say"'],
    'wrong type' => ['{"type":"shout","text":"hi"}', 'must be {"type":"say"'],
    'no type' => ['{"text":"hi"}', 'must be {"type":"say"'],
    'extra key' => ['{"type":"say","text":"hi","nick":"admin"}', 'only "type" and "text"'],
    'text missing' => ['{"type":"say"}', 'must be a string'],
    'text a number' => ['{"type":"say","text":42}', 'must be a string'],
    'text an object' => ['{"type":"say","text":{"a":1}}', 'must be a string'],
    'empty text' => [$say(''), 'empty'],
    'only spaces' => [$say("  \n "), 'empty'],
    'control character' => [$say("bell\x07"), 'control characters'],
    'NUL' => [$say("a\x00b"), 'control characters'],
    'invalid UTF-8' => ["{\"type\":\"say\",\"text\":\"\xff\"}", 'must be JSON'],
];
foreach ($bad as $what => [$raw, $why]) {
    [$text, $problem] = Rules::parseSay($raw);
    check("message refused: $what", $text === null && $problem !== null && str_contains($problem, $why), var_export($problem, true));
}

// --- the backlog request --------------------------------------------------------

same('backlog: after an id', 41, Rules::parseBacklog('{"type":"backlog","after":41}'));
same('backlog: after 0 (the page has none)', 0, Rules::parseBacklog('{"type":"backlog","after":0}'));
same('backlog: keys in any order', 7, Rules::parseBacklog('{"after":7,"type":"backlog"}'));
foreach ([
    'a say' => '{"type":"say","text":"hi"}',
    'no after' => '{"type":"backlog"}',
    'a negative id' => '{"type":"backlog","after":-1}',
    'a string id' => '{"type":"backlog","after":"41"}',
    'a float id' => '{"type":"backlog","after":4.5}',
    'an extra key' => '{"type":"backlog","after":1,"room":"other"}',
    'not JSON' => 'backlog',
    'a list' => '["backlog",1]',
    'too long' => '{"type":"backlog","after":1' . str_repeat(' ', 100) . '}',
] as $what => $raw) {
    same("backlog: not $what", null, Rules::parseBacklog($raw));
}
[, $problem] = Rules::parseSay('{"type":"backlog","after":-1}');
check('a bad backlog request is answered with an error (parseSay judges it)', $problem !== null);

// --- channels -------------------------------------------------------------------

same('messages go to the room channel (it keeps history)', 'room:lobby', Chat::channel('lobby'));
same('notices go to a channel of their own (no history)', 'people:lobby', Chat::peopleChannel('lobby'));

// --- history ------------------------------------------------------------------

$dir = sys_get_temp_dir() . '/chat-test-' . bin2hex(random_bytes(4));
$path = "$dir/sub/chat.sqlite";
try {
    $history = History::open($path);
    check('the database and its directory are created on first use', is_file($path));
    same('a new room has no history', [], $history->recent('lobby'));

    $first = $history->add('lobby', 'alice', 'hello', 1000);
    same('add returns the stored message', ['id' => $first['id'], 'nick' => 'alice', 'text' => 'hello', 'ts' => 1000], $first);
    $second = $history->add('lobby', 'bob', '<script>alert(1)</script>', 2000);
    check('ids grow', $second['id'] > $first['id']);
    $history->add('other', 'carol', 'elsewhere', 3000);
    same(
        'recent: oldest first, this room only',
        [['alice', 'hello'], ['bob', '<script>alert(1)</script>']],
        array_map(fn ($m) => [$m['nick'], $m['text']], $history->recent('lobby'))
    );

    for ($i = 1; $i <= 60; $i++) {
        $history->add('busy', 'alice', "message $i", 10000 + $i);
    }
    $recent = $history->recent('busy');
    same('recent: the last 50', History::RECENT, count($recent));
    same('recent: starts at message 11', 'message 11', $recent[0]['text']);
    same('recent: ends at message 60', 'message 60', $recent[49]['text']);
    same('recent: types survive the round trip', ['integer', 'integer'], [gettype($recent[0]['id']), gettype($recent[0]['ts'])]);

    $again = History::open($path);
    same('a second open (another worker) sees the same rows', 'message 60', $again->recent('busy', 1)[0]['text']);
    $text = "multi\nline é 👋 \"quotes\" 'single' \\ back";
    $again->add('lobby', 'bob', $text, 4000);
    same('text is read back byte-exact', $text, $history->recent('lobby', 1)[0]['text']);

    $busy = array_column($history->recent('busy', 60), 'id'); // messages 1..60, oldest first
    $after = $history->after('busy', $busy[56]);
    same('after: the messages after the id, oldest first', ['message 58', 'message 59', 'message 60'], array_column($after['messages'], 'text'));
    same('after: no more', false, $after['more']);
    same('after the newest: nothing', ['messages' => [], 'more' => false], $history->after('busy', $busy[59]));
    $capped = $history->after('busy', 0, 10);
    same('after, over the limit: the newest ones', 'message 51', $capped['messages'][0]['text']);
    same('after, over the limit: as many as the limit', 10, count($capped['messages']));
    same('after, over the limit: more', true, $capped['more']);
    same('after: this room only', ['elsewhere'], array_column($history->after('other', 0)['messages'], 'text'));
} catch (Throwable $e) {
    check('history', false, get_class($e) . ': ' . $e->getMessage());
} finally {
    foreach (glob("$dir/sub/*") ?: [] as $file) {
        unlink($file);
    }
    @rmdir("$dir/sub");
    @rmdir($dir);
}

echo "\n$passed passed, $failed failed\n";
exit($failed === 0 ? 0 : 1);
