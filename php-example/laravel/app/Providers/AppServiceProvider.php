<?php

namespace App\Providers;

use App\Auth\FixedUserProvider;
use Illuminate\Support\Facades\Auth;
use Illuminate\Support\ServiceProvider;

class AppServiceProvider extends ServiceProvider
{
    public function boot()
    {
        Auth::provider('fixed', fn ($app) => new FixedUserProvider($app['config']['chat.users'], $app['hash']));
    }
}
