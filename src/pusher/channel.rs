//! Pusher channel names and what their prefix makes of them.
//!
//! A name is 1 to [`MAX_CHANNEL_NAME`] bytes of `[A-Za-z0-9_\-=@,.;]`, as
//! Pusher accepts them; `#` names are the server's own (`#server-to-user-…`)
//! and cannot be subscribed to.

/// Longest channel name, in bytes (Pusher's limit).
pub const MAX_CHANNEL_NAME: usize = 164;

/// What a channel's prefix says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// No prefix: anyone subscribes, no client events.
    Public,
    /// `private-`: a signed subscription; client events allowed.
    Private,
    /// `private-encrypted-`: as private; the server relays the ciphertext as is.
    PrivateEncrypted,
    /// `presence-`: signed, with the member's `user_id`/`user_info`; client events allowed.
    Presence,
    /// `cache-` (public): the last event is replayed to a new subscriber.
    Cache,
    /// `private-cache-` / `private-encrypted-cache-`.
    PrivateCache,
    /// `presence-cache-`.
    PresenceCache,
}

impl ChannelKind {
    /// The kind of a channel name (assumed valid).
    pub fn of(name: &str) -> Self {
        if name.starts_with("presence-cache-") {
            Self::PresenceCache
        } else if name.starts_with("presence-") {
            Self::Presence
        } else if name.starts_with("private-encrypted-cache-") || name.starts_with("private-cache-")
        {
            Self::PrivateCache
        } else if name.starts_with("private-encrypted-") {
            Self::PrivateEncrypted
        } else if name.starts_with("private-") {
            Self::Private
        } else if name.starts_with("cache-") {
            Self::Cache
        } else {
            Self::Public
        }
    }

    /// Does a subscription need a signature?
    pub fn needs_auth(self) -> bool {
        !matches!(self, Self::Public | Self::Cache)
    }

    /// Is it a presence channel (members, `channel_data`)?
    pub fn is_presence(self) -> bool {
        matches!(self, Self::Presence | Self::PresenceCache)
    }

    /// Does it keep its last event for new subscribers?
    pub fn is_cache(self) -> bool {
        matches!(self, Self::Cache | Self::PrivateCache | Self::PresenceCache)
    }

    /// May clients send `client-*` events on it?
    pub fn allows_client_events(self) -> bool {
        self.needs_auth()
    }
}

/// Is `name` a channel name a client may subscribe to or an event may name?
///
/// ```
/// use ws2fcgi::pusher::channel::check;
/// assert!(check("presence-room.42;a=b@c,d").is_ok());
/// assert!(check("room 1").is_err());
/// assert!(check("#server-to-user-1").is_err());
/// ```
pub fn check(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty channel name".into());
    }
    if name.len() > MAX_CHANNEL_NAME {
        return Err(format!("channel name longer than {MAX_CHANNEL_NAME} bytes"));
    }
    if let Some(bad) = name.chars().find(|c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '=' | '@' | ',' | '.' | ';'))
    }) {
        return Err(format!(
            "channel name has `{}`: only letters, digits and _-=@,.; are allowed",
            bad.escape_default()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_prefix() {
        for (name, kind) in [
            ("room", ChannelKind::Public),
            ("cache-room", ChannelKind::Cache),
            ("private-room", ChannelKind::Private),
            ("private-encrypted-room", ChannelKind::PrivateEncrypted),
            ("private-cache-room", ChannelKind::PrivateCache),
            ("private-encrypted-cache-room", ChannelKind::PrivateCache),
            ("presence-room", ChannelKind::Presence),
            ("presence-cache-room", ChannelKind::PresenceCache),
            ("privateroom", ChannelKind::Public),
        ] {
            assert_eq!(ChannelKind::of(name), kind, "{name}");
        }
        assert!(!ChannelKind::Cache.needs_auth() && ChannelKind::PrivateCache.needs_auth());
        assert!(ChannelKind::PresenceCache.is_presence() && ChannelKind::PresenceCache.is_cache());
        assert!(!ChannelKind::Public.allows_client_events());
    }

    #[test]
    fn names_are_checked() {
        assert!(check(&"a".repeat(MAX_CHANNEL_NAME)).is_ok());
        assert!(check(&"a".repeat(MAX_CHANNEL_NAME + 1)).is_err());
        for bad in ["", "a b", "a\u{1}b", "é", "a/b", "a:b"] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
    }
}
