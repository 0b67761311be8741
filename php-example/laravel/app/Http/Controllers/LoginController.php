<?php

declare(strict_types=1);

namespace App\Http\Controllers;

use Illuminate\Http\Request;
use Illuminate\Support\Facades\Auth;

final class LoginController
{
    public function show()
    {
        return view('login', ['users' => config('chat.users')]);
    }

    public function login(Request $request)
    {
        $credentials = ['email' => (string) $request->input('email'), 'password' => (string) $request->input('password')];
        if (! Auth::attempt($credentials)) {
            return back()->withInput(['email' => $credentials['email']])->withErrors(['email' => 'Wrong e-mail address or password.']);
        }
        $request->session()->regenerate();

        return redirect()->intended('/rooms/lobby');
    }

    public function logout(Request $request)
    {
        Auth::logout();
        $request->session()->invalidate();
        $request->session()->regenerateToken();

        return redirect('/login');
    }
}
