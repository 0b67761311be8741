<?php

namespace App\Providers;

use Illuminate\Support\Facades\Broadcast;
use Illuminate\Support\ServiceProvider;

class BroadcastServiceProvider extends ServiceProvider
{
    public function boot()
    {
        // POST /broadcasting/auth, for Echo's authEndpoint (and for ws2fcgi's
        // subscribe events with auth = "php", through ws.php).
        Broadcast::routes();

        require base_path('routes/channels.php');
    }
}
