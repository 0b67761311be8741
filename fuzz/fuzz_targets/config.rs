//! A TOML document → `Config::from_toml`, then `validate` on what parsed.
//! A valid config must also be safe to use: every duration can be added to
//! the clock (`Instant + Duration` panics on overflow).
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(config) = ws2fcgi::Config::from_toml(text) else {
        return;
    };
    if config.validate().is_err() {
        return;
    }
    let _ = config.control.mode_bits();
    let _ = ws2fcgi::limits::OriginPolicy::new(&config.websocket.allowed_origins);
    let _ = config.script_for("/");
    let (fpm, ws) = (&config.fpm, &config.websocket);
    let now = Instant::now();
    for d in [
        fpm.connect_timeout,
        fpm.queue_timeout,
        fpm.request_timeout,
        fpm.idle_timeout,
        fpm.retry_window,
        ws.ping_interval,
        ws.idle_timeout,
        ws.handshake_timeout,
        ws.close_timeout,
        config.shutdown.drain_timeout,
    ] {
        assert!(now.checked_add(d).is_some(), "{d:?} overflows the clock");
    }
});
