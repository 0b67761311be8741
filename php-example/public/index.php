<?php
// The chat page, served by PHP-FPM through nginx. Without ?room=&nick= (or
// with ones that break the rules) it shows the form; with them, the chat view:
// the room's last 50 messages rendered here from SQLite, then chat.js takes
// over through ws2fcgi.js and the WebSocket (/ws). Every user-provided string goes through
// e() (htmlspecialchars) here and textContent in chat.js.

declare(strict_types=1);

require __DIR__ . '/../lib/Chat.php';

use Chat\Chat;
use Chat\History;
use Chat\Rules;

function e(string $s): string
{
    return htmlspecialchars($s, ENT_QUOTES | ENT_SUBSTITUTE, 'UTF-8');
}

$room = is_string($_GET['room'] ?? null) ? $_GET['room'] : '';
$nick = Rules::normalizeNick(is_string($_GET['nick'] ?? null) ? $_GET['nick'] : '');
$entering = isset($_GET['nick']); // ?room= alone (the Leave link) just pre-fills the form
$problem = $entering ? (Rules::nickProblem($nick) ?? Rules::roomProblem($room)) : null;
$chat = $entering && $problem === null;

$history = [];
if ($chat) {
    try {
        $history = Chat::history()->recent($room);
    } catch (Throwable $e) {
        error_log('chat: history unavailable: ' . $e->getMessage());
    }
}

Chat::ensureOwnerCookie($_COOKIE);
header("Content-Security-Policy: default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'");
header('X-Content-Type-Options: nosniff');
header('Referrer-Policy: same-origin');
?>
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title><?= $chat ? '#' . e($room) . ' · ' : '' ?>ws2fcgi chat</title>
<link rel="stylesheet" href="/chat.css">
<link rel="icon" href="data:,">
</head>
<body>
<?php if (!$chat): ?>
<main class="card">
  <h1>ws2fcgi chat</h1>
  <p class="lead">Real-time chat in plain PHP: every WebSocket event is one PHP-FPM request.</p>
  <form method="get" action="/" class="enter">
    <label>Nickname
      <input name="nick" value="<?= e($nick) ?>" maxlength="<?= Rules::MAX_NICK ?>" required autofocus autocomplete="nickname">
    </label>
    <label>Room
      <input name="room" value="<?= e($room === '' ? 'lobby' : $room) ?>" maxlength="<?= Rules::MAX_ROOM ?>" required>
    </label>
    <?php if ($problem !== null): ?>
    <p class="error" role="alert"><?= e(ucfirst($problem)) ?>.</p>
    <?php endif ?>
    <button type="submit">Enter the room</button>
  </form>
  <p class="hint">Letters, digits, <code>_ . -</code> and single spaces; up to <?= Rules::MAX_NICK ?> characters.</p>
</main>
<?php else: ?>
<div id="chat" class="chat" data-room="<?= e($room) ?>" data-nick="<?= e($nick) ?>">
  <header class="top">
    <h1>#<?= e($room) ?></h1>
    <span class="me">as <b><?= e($nick) ?></b></span>
    <span id="status" class="status" role="status">connecting…</span>
    <a class="out" href="/?room=<?= e(rawurlencode($room)) ?>">Leave</a>
  </header>
  <div id="error" class="error banner" role="alert" hidden></div>
  <div class="body">
    <ol id="log" class="log" aria-live="polite">
      <?php if ($history === []): ?>
      <li id="empty" class="empty"><b>No messages in #<?= e($room) ?> yet.</b>
        Say hello, or invite someone with <a href="/?room=<?= e(rawurlencode($room)) ?>">the link to this room</a>:
        they pick a nickname and join you here.</li>
      <?php endif ?>
      <?php foreach ($history as $m): ?>
      <li class="msg" data-id="<?= $m['id'] ?>"><time data-ts="<?= $m['ts'] ?>"><?= e(gmdate('H:i', intdiv($m['ts'], 1000))) ?></time><b class="nick"><?= e($m['nick']) ?></b><span class="text"><?= e($m['text']) ?></span></li>
      <?php endforeach ?>
    </ol>
    <aside class="people">
      <h2>Here now</h2>
      <ul id="members"></ul>
    </aside>
  </div>
  <form id="say" class="say" autocomplete="off">
    <input id="text" name="text" placeholder="Say something…" aria-label="Message" disabled>
    <button type="submit" disabled>Send</button>
  </form>
</div>
<script type="module" src="/chat.js"></script>
<?php endif ?>
</body>
</html>
