//! The configured Pusher apps, found by key (a client's `/app/{key}`) and by
//! id (the HTTP API's `/apps/{id}`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{AuthMode, PusherConfig};
use crate::secret::Secret;

/// One app, as `[[pusher.app]]` configures it.
#[derive(Debug)]
pub struct App {
    /// The app id.
    pub id: String,
    /// The public key.
    pub key: String,
    /// The secret that signs subscriptions, sign-ins and API requests.
    pub secret: Secret,
    /// How private and presence subscriptions are authorized.
    pub auth: AuthMode,
    /// The script of events to PHP, when the app has one.
    pub script: Option<std::path::PathBuf>,
}

/// Every configured app; built from a validated configuration (ids and keys unique).
#[derive(Debug, Default)]
pub struct Apps {
    by_key: HashMap<String, Arc<App>>,
    by_id: HashMap<String, Arc<App>>,
}

impl Apps {
    /// The apps of `[pusher]`.
    pub fn new(config: &PusherConfig) -> Self {
        let mut apps = Self::default();
        for a in &config.apps {
            let app = Arc::new(App {
                id: a.id.clone(),
                key: a.key.clone(),
                secret: a.secret.clone(),
                auth: a.auth,
                script: a.script.clone(),
            });
            apps.by_key.insert(app.key.clone(), app.clone());
            apps.by_id.insert(app.id.clone(), app);
        }
        apps
    }

    /// The app a client connects to, by its key.
    pub fn by_key(&self, key: &str) -> Option<&Arc<App>> {
        self.by_key.get(key)
    }

    /// The app an API request or a control op names, by its id.
    pub fn by_id(&self, id: &str) -> Option<&Arc<App>> {
        self.by_id.get(id)
    }

    /// Is any app configured (is the Pusher protocol on)?
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_by_key_and_by_id() {
        let config = crate::Config::from_toml(
            "[[pusher.app]]\nid = \"1\"\nkey = \"k1\"\nsecret = \"s1\"\n\
             [[pusher.app]]\nid = \"2\"\nkey = \"k2\"\nsecret = \"s2\"\n",
        )
        .unwrap();
        let apps = Apps::new(&config.pusher);
        assert_eq!(apps.by_key("k2").map(|a| a.id.as_str()), Some("2"));
        assert_eq!(apps.by_id("1").map(|a| a.key.as_str()), Some("k1"));
        assert!(apps.by_key("1").is_none() && apps.by_id("k1").is_none());
        assert!(!apps.is_empty() && Apps::default().is_empty());
    }
}
