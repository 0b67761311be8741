//! PHP's answer to a presence `subscribe` event → `pusher::php::presence_member`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws2fcgi::pusher::{check_user_id, php::presence_member};

fuzz_target!(|data: &[u8]| {
    if let Ok((id, _info)) = presence_member(data) {
        // Every member accepted has a user id the presence list can carry.
        assert!(check_user_id(&id).is_ok());
    }
});
