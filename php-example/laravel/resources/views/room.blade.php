<!doctype html>
<html lang="en">
<head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <meta name="csrf-token" content="{{ csrf_token() }}">
    <title>#{{ $room }} · ws2fcgi + Laravel</title>
    <link rel="stylesheet" href="/chat.css">
</head>
<body>
<main id="chat"
      data-room="{{ $room }}"
      data-me="{{ json_encode($me) }}"
      data-key="{{ $pusher['key'] }}"
      data-channel-auth="{{ $pusher['auth'] }}">
    <header>
        <h1>#{{ $room }}</h1>
        <span id="status" data-state="connecting">connecting…</span>
        <span class="me">{{ $me['name'] }}</span>
        <form method="post" action="/logout">@csrf<button type="submit">Log out</button></form>
    </header>
    <nav>
        @foreach ($rooms as $name)
            <a href="/rooms/{{ $name }}" @if ($name === $room) aria-current="page" @endif>#{{ $name }}</a>
        @endforeach
    </nav>
    <aside>
        <h2>Here</h2>
        <ul id="people"></ul>
        <h2>Nudge</h2>
        <ul id="nudge">
            @foreach ($people as $person)
                @if ($person['id'] !== $me['id'])
                    <li><button type="button" data-id="{{ $person['id'] }}">{{ $person['name'] }}</button></li>
                @endif
            @endforeach
        </ul>
    </aside>
    <section>
        <ul id="messages" aria-live="polite"></ul>
        <form id="send" autocomplete="off">
            <input name="text" maxlength="2000" placeholder="Message #{{ $room }}" required>
            <button type="submit">Send</button>
        </form>
    </section>
</main>
<script src="/vendor/pusher.min.js"></script>
<script src="/vendor/echo.iife.js"></script>
<script src="/chat.js"></script>
</body>
</html>
