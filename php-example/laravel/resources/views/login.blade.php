<!doctype html>
<html lang="en">
<head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Log in · ws2fcgi + Laravel</title>
    <link rel="stylesheet" href="/chat.css">
</head>
<body>
<main class="login">
    <h1>ws2fcgi + Laravel</h1>
    <form method="post" action="/login" id="login">
        @csrf
        <label>E-mail <input name="email" type="email" value="{{ old('email') }}" required autofocus></label>
        <label>Password <input name="password" type="password" required></label>
        @error('email')<p class="error" role="alert">{{ $message }}</p>@enderror
        <button type="submit">Log in</button>
    </form>
    <p class="hint">The people here (password <code>secret</code>):
        @foreach ($users as $user)
            <code>{{ $user['email'] }}</code>@if (! $loop->last), @endif
        @endforeach
    </p>
</main>
</body>
</html>
