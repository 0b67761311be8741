<?php

use App\Http\Controllers\ChatController;
use App\Http\Controllers\LoginController;
use App\WebSockets\EchoHandler;
use App\WebSockets\MeHandler;
use Illuminate\Support\Facades\Route;

Route::get('/login', [LoginController::class, 'show'])->name('login');
Route::post('/login', [LoginController::class, 'login']);
Route::post('/logout', [LoginController::class, 'logout']);

// Raw WebSocket routes (not Pusher): ws2fcgi runs their events through
// ws.php (Ws2fcgi\Laravel\EventKernel); a plain HTTP request gets 404.
Route::websocket('/ws/echo', EchoHandler::class);

Route::middleware('auth')->group(function () {
    Route::redirect('/', '/rooms/lobby');
    Route::get('/rooms/{room}', [ChatController::class, 'show'])->where('room', '[a-z0-9-]+');
    Route::post('/rooms/{room}/messages', [ChatController::class, 'post'])->where('room', '[a-z0-9-]+');
    Route::post('/users/{id}/nudge', [ChatController::class, 'nudge'])->whereNumber('id');
    Route::websocket('/ws/me', MeHandler::class);
});
