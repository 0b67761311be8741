//! The Pusher HTTP API, as Pusher's server SDKs call it (see
//! `docs/pusher.md`), on the WebSocket listeners (a request that is no
//! upgrade and whose path starts with `/apps/`, when an app is configured)
//! and on `pusher.api_listen`:
//!
//! ```text
//! POST /apps/{id}/events                               200 {}  (or {"channels":{…}} with info)
//! POST /apps/{id}/batch_events                         200 {}  (or {"batch":[…]} with info)
//! GET  /apps/{id}/channels                             200 {"channels":{"name":{…}}}
//! GET  /apps/{id}/channels/{name}                      200 {"occupied":true,…}
//! GET  /apps/{id}/channels/{name}/users                200 {"users":[{"id":"…"}]}   presence- only
//! POST /apps/{id}/users/{user_id}/terminate_connections 200 {}
//! ```
//!
//! Every request is signed (`api_signature.rs`). The answers to what is
//! refused are plain text saying why: 401 a signature (missing, unknown
//! key, stale timestamp, wrong `body_md5`, wrong signature), 404 an unknown
//! app or path, 405 a known path with the wrong method, 400 a body that is
//! not the JSON asked for or breaks a limit (channels per event, events
//! per batch, names), 413 an event's `data` over `pusher.max_message_bytes`
//! or a body over [`max_body`].
//!
//! What is counted is this node's: the channels, subscriptions and presence
//! users of the connections connected here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::api_signature::{self, Query};
use super::channel::{ChannelKind, MAX_CHANNEL_NAME};
use super::publish::{self, Event, PublishError, USER_CHANNEL_PREFIX};
use super::{App, hub_channel, user_channel};
use crate::config::PusherConfig;
use crate::context::Context;

/// An HTTP answer.
pub type HttpResponse = Response<Full<Bytes>>;

/// How long a client may take to send a request's body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The WebSocket close code of a connection ended by `terminate_connections`
/// (sent with a `pusher:error` of the same code first): 4009, "unauthorized",
/// which pusher-js does not reconnect after.
pub const TERMINATED_CODE: u16 = 4009;

/// Connections `pusher.api_listen` serves at a time (kept alive between
/// requests); more wait to be accepted, as on the HTTP control endpoint.
pub const MAX_CLIENTS: usize = 64;

/// Serves the API on `pusher.api_listen` until the task set is aborted.
pub fn spawn(
    listener: tokio::net::TcpListener,
    ctx: Arc<Context>,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    crate::local_http::spawn(
        listener,
        "pusher api",
        MAX_CLIENTS,
        ctx,
        tasks,
        |_| crate::local_http::HEADER_READ_TIMEOUT,
        serve,
    );
}

/// Is `path` the HTTP API's (`/apps/…`)?
pub fn is_api_path(path: &str) -> bool {
    path.starts_with("/apps/")
}

/// The largest request body accepted: a full batch of events, each with
/// its `data` at `max_message_bytes` escaped as a JSON string (6 bytes a
/// byte at worst) and its channels at their longest.
pub fn max_body(config: &PusherConfig) -> usize {
    let event = 6 * config.max_message_bytes
        + config.max_channels_per_event * (6 * MAX_CHANNEL_NAME + 4)
        + 4096;
    config.max_batch_events.max(1).saturating_mul(event)
}

/// Serves one API request.
pub async fn serve(ctx: Arc<Context>, req: Request<Incoming>) -> HttpResponse {
    let (parts, body) = req.into_parts();
    let apps = ctx.pusher_apps();
    let path = parts.uri.path();
    let Some((app_id, route)) = route(path) else {
        return text(
            StatusCode::NOT_FOUND,
            "Not found: see /apps/{app_id}/events and the Pusher HTTP API reference",
        );
    };
    let Some(app) = apps.by_id(&app_id) else {
        return text(
            StatusCode::NOT_FOUND,
            &format!("Unknown app `{}`", cut(&app_id)),
        );
    };
    let method = parts.method.clone();
    let wants = match route {
        Route::Events | Route::BatchEvents | Route::Terminate(_) => Method::POST,
        _ => Method::GET,
    };
    if method != wants {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, &format!("Use {wants}"));
        if let Ok(v) = HeaderValue::from_str(wants.as_str()) {
            r.headers_mut().insert(header::ALLOW, v);
        }
        return r;
    }
    let config = ctx.config();
    let limit = max_body(&config.pusher);
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large(limit);
    }
    let body = match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(limit),
        Ok(Err(e)) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("The request body could not be read: {e}"),
            );
        }
        Err(_) => {
            return text(
                StatusCode::REQUEST_TIMEOUT,
                "The request body took too long",
            );
        }
    };
    let query = match Query::parse(parts.uri.query().unwrap_or("")) {
        Ok(query) => query,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e),
    };
    let request = api_signature::Request {
        method: method.as_str(),
        path,
        query: &query,
        body: &body,
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let tolerance = config.pusher.timestamp_tolerance.as_secs();
    if let Err(refusal) =
        api_signature::verify(&app.key, app.secret.expose(), &request, now, tolerance)
    {
        tracing::info!(app = %app.id, path, error = %refusal, "pusher api request refused");
        return text(StatusCode::UNAUTHORIZED, &refusal.to_string());
    }
    let result = match route {
        Route::Events => events(&ctx, app, &body).await,
        Route::BatchEvents => batch_events(&ctx, app, &body).await,
        Route::Channels => channels(&ctx, app, &query).await,
        Route::Channel(name) => channel(&ctx, app, &name, &query).await,
        Route::Users(name) => users(&ctx, app, &name),
        Route::Terminate(user) => terminate(&ctx, app, &user),
    };
    match result {
        Ok(value) => json_response(StatusCode::OK, &value),
        Err((status, message)) => text(status, &message),
    }
}

/// What a path asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Events,
    BatchEvents,
    Channels,
    Channel(String),
    Users(String),
    Terminate(String),
}

/// The app id and route of `/apps/{id}/…` (segments unescaped).
fn route(path: &str) -> Option<(String, Route)> {
    let rest = path.strip_prefix("/apps/")?;
    let segments: Vec<String> = rest.split('/').map(unescape).collect::<Option<Vec<_>>>()?;
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let route = match s.as_slice() {
        [_, "events"] => Route::Events,
        [_, "batch_events"] => Route::BatchEvents,
        [_, "channels"] => Route::Channels,
        [_, "channels", name] => Route::Channel((*name).to_owned()),
        [_, "channels", name, "users"] => Route::Users((*name).to_owned()),
        [_, "users", user, "terminate_connections"] => Route::Terminate((*user).to_owned()),
        _ => return None,
    };
    Some((segments[0].clone(), route))
}

type Answer = Result<Value, (StatusCode, String)>;

fn bad(message: impl Into<String>) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, message.into())
}

/// One event of `events` or of a batch, as JSON gives it.
#[derive(Deserialize)]
struct EventBody {
    name: Option<String>,
    data: Option<Value>,
    channel: Option<String>,
    channels: Option<Vec<String>>,
    socket_id: Option<String>,
    info: Option<String>,
}

/// An event read and checked, ready to publish.
struct Checked {
    name: String,
    data: String,
    channels: Vec<String>,
    socket_id: Option<String>,
    info: Info,
}

impl Checked {
    fn event(&self) -> Event<'_> {
        Event {
            channels: &self.channels,
            name: &self.name,
            data: &self.data,
            socket_id: self.socket_id.as_deref(),
        }
    }
}

fn read_event(ctx: &Context, value: Value) -> Result<Checked, (StatusCode, String)> {
    let body: EventBody =
        serde_json::from_value(value).map_err(|e| bad(format!("Invalid event: {e}")))?;
    let name = body
        .name
        .ok_or_else(|| bad("Missing event name (`name`)"))?;
    let data = match body.data {
        Some(Value::String(data)) => data,
        Some(_) => return Err(bad("`data` must be a string (JSON-encode it)")),
        None => return Err(bad("Missing `data`")),
    };
    let channels = match (body.channel, body.channels) {
        (Some(one), None) => vec![one],
        (None, Some(many)) => many,
        (Some(_), Some(_)) => return Err(bad("Give `channel` or `channels`, not both")),
        (None, None) => return Err(bad("Missing `channels` (or `channel`)")),
    };
    let info = Info::parse(body.info.as_deref()).map_err(bad)?;
    let checked = Checked {
        name,
        data,
        channels,
        socket_id: body.socket_id,
        info,
    };
    publish::check(ctx, &checked.event()).map_err(|e| publish_error(&e))?;
    if checked.info.user_count
        && let Some(c) = checked
            .channels
            .iter()
            .find(|c| !ChannelKind::of(c).is_presence())
    {
        return Err(bad(format!(
            "info=user_count is only for presence channels, not `{}`",
            cut(c)
        )));
    }
    Ok(checked)
}

fn publish_error(e: &PublishError) -> (StatusCode, String) {
    let status = match e {
        PublishError::TooLarge(..) => StatusCode::PAYLOAD_TOO_LARGE,
        PublishError::UnknownApp(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    (status, e.to_string())
}

fn parse_json(body: &[u8]) -> Result<Value, (StatusCode, String)> {
    serde_json::from_slice(body).map_err(|e| bad(format!("Invalid JSON body: {e}")))
}

/// `POST /apps/{id}/events`.
async fn events(ctx: &Context, app: &App, body: &[u8]) -> Answer {
    let checked = read_event(ctx, parse_json(body)?)?;
    publish::publish(ctx, &app.id, &checked.event()).map_err(|e| publish_error(&e))?;
    if checked.info.is_empty() {
        return Ok(json!({}));
    }
    let counts = Counts::read(ctx, checked.info.subscription_count).await;
    let mut channels = Map::new();
    for name in &checked.channels {
        channels.insert(
            name.clone(),
            Value::Object(info_of(ctx, app, name, checked.info, &counts)),
        );
    }
    Ok(json!({ "channels": channels }))
}

/// `POST /apps/{id}/batch_events`: every event is checked before any is published.
async fn batch_events(ctx: &Context, app: &App, body: &[u8]) -> Answer {
    let mut value = parse_json(body)?;
    let Some(Value::Array(batch)) = value.get_mut("batch").map(Value::take) else {
        return Err(bad("Missing `batch`: an array of events"));
    };
    let most = ctx.config().pusher.max_batch_events;
    if batch.is_empty() || batch.len() > most {
        return Err(bad(format!(
            "A batch holds 1 to {most} events, not {}",
            batch.len()
        )));
    }
    let checked = batch
        .into_iter()
        .map(|event| read_event(ctx, event))
        .collect::<Result<Vec<_>, _>>()?;
    for event in &checked {
        publish::publish(ctx, &app.id, &event.event()).map_err(|e| publish_error(&e))?;
    }
    if checked.iter().all(|e| e.info.is_empty()) {
        return Ok(json!({}));
    }
    let counts = Counts::read(ctx, checked.iter().any(|e| e.info.subscription_count)).await;
    let answers: Vec<Value> = checked
        .iter()
        .map(|e| Value::Object(info_of(ctx, app, &e.channels[0], e.info, &counts)))
        .collect();
    Ok(json!({ "batch": answers }))
}

/// The attributes `info` asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Info {
    user_count: bool,
    subscription_count: bool,
}

impl Info {
    fn parse(text: Option<&str>) -> Result<Self, String> {
        let mut info = Self::default();
        for attribute in text
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match attribute {
                "user_count" => info.user_count = true,
                "subscription_count" => info.subscription_count = true,
                other => {
                    return Err(format!(
                        "Unknown info attribute `{}`: user_count, subscription_count",
                        cut(other)
                    ));
                }
            }
        }
        Ok(info)
    }

    fn is_empty(self) -> bool {
        self == Self::default()
    }
}

/// Subscribers of Pusher channels on the other nodes of a cluster, read
/// once per request (nothing on a single node, or when not needed).
#[derive(Default)]
struct Counts {
    /// Hub channel → subscribers on the other live nodes.
    remote: std::collections::HashMap<String, usize>,
}

impl Counts {
    async fn read(ctx: &Context, needed: bool) -> Self {
        match &ctx.cluster {
            Some(cluster) if needed => Self {
                remote: cluster.pusher_counts().await,
            },
            _ => Self::default(),
        }
    }

    /// Subscribers of a hub channel on every node.
    fn of(&self, ctx: &Context, hub_name: &str) -> usize {
        ctx.hub.member_count(hub_name) + self.remote.get(hub_name).copied().unwrap_or(0)
    }
}

/// The attributes of one channel that `info` asks for.
fn info_of(
    ctx: &Context,
    app: &App,
    channel: &str,
    info: Info,
    counts: &Counts,
) -> Map<String, Value> {
    let hub_name = hub_channel(&app.id, channel);
    let mut out = Map::new();
    if info.user_count && ChannelKind::of(channel).is_presence() {
        out.insert(
            "user_count".into(),
            json!(presence_users(ctx, &hub_name).len()),
        );
    }
    if info.subscription_count {
        out.insert(
            "subscription_count".into(),
            json!(counts.of(ctx, &hub_name)),
        );
    }
    out
}

/// The user ids of a presence channel, each once, in order (the WebSocket
/// side counts presence members per user: `state.rs`; in a cluster, the
/// cluster's users: `roster.rs`).
fn presence_users(ctx: &Context, hub_name: &str) -> Vec<String> {
    let mut users: Vec<String> = ctx
        .pusher
        .members(hub_name)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    users.sort();
    users
}

/// `GET /apps/{id}/channels`: the occupied channels (of every node), maybe with a prefix.
async fn channels(ctx: &Context, app: &App, query: &Query) -> Answer {
    let prefix = query.get("filter_by_prefix").unwrap_or("");
    let info = Info::parse(query.get("info")).map_err(bad)?;
    if info.user_count && !prefix.starts_with("presence-") {
        return Err(bad("info=user_count needs filter_by_prefix=presence-"));
    }
    let hub_prefix = hub_channel(&app.id, prefix);
    let counts = Counts::read(ctx, true).await;
    let mut occupied: std::collections::BTreeSet<String> = ctx
        .hub
        .channels_with_prefix(&hub_prefix)
        .into_iter()
        .map(|(hub_name, _)| hub_name)
        .collect();
    occupied.extend(
        counts
            .remote
            .iter()
            .filter(|(hub_name, n)| **n > 0 && hub_name.starts_with(&hub_prefix))
            .map(|(hub_name, _)| hub_name.clone()),
    );
    let mut found = BTreeMap::new();
    for hub_name in occupied {
        let Some((_, name)) = super::from_hub_channel(&hub_name) else {
            continue;
        };
        if name.starts_with(USER_CHANNEL_PREFIX) {
            continue;
        }
        found.insert(
            name.to_owned(),
            Value::Object(info_of(ctx, app, name, info, &counts)),
        );
    }
    Ok(json!({ "channels": found }))
}

fn check_name(name: &str) -> Result<(), (StatusCode, String)> {
    super::channel::check(name).map_err(|e| bad(format!("Invalid channel `{}`: {e}", cut(name))))
}

/// `GET /apps/{id}/channels/{name}`: counts of every node.
async fn channel(ctx: &Context, app: &App, name: &str, query: &Query) -> Answer {
    check_name(name)?;
    let info = Info::parse(query.get("info")).map_err(bad)?;
    if info.user_count && !ChannelKind::of(name).is_presence() {
        return Err(bad("info=user_count is only for presence channels"));
    }
    let counts = Counts::read(ctx, true).await;
    let count = counts.of(ctx, &hub_channel(&app.id, name));
    let mut out = Map::new();
    out.insert("occupied".into(), json!(count > 0));
    out.extend(info_of(ctx, app, name, info, &counts));
    Ok(Value::Object(out))
}

/// `GET /apps/{id}/channels/{name}/users`: presence channels only.
fn users(ctx: &Context, app: &App, name: &str) -> Answer {
    check_name(name)?;
    if !ChannelKind::of(name).is_presence() {
        return Err(bad("Users are only listed for presence channels"));
    }
    let users: Vec<Value> = presence_users(ctx, &hub_channel(&app.id, name))
        .into_iter()
        .map(|id| json!({ "id": id }))
        .collect();
    Ok(json!({ "users": users }))
}

/// `POST /apps/{id}/users/{user_id}/terminate_connections`: closes the
/// connections signed in as the user (`pusher:signin`), each told why with
/// a `pusher:error` first.
fn terminate(ctx: &Context, app: &App, user: &str) -> Answer {
    publish::check_channel(&format!("{USER_CHANNEL_PREFIX}{user}"))
        .map_err(|e| bad(format!("Invalid user id: {e}")))?;
    let closed = super::cluster::terminate(ctx, &user_channel(&app.id, user));
    tracing::info!(app = %app.id, user = cut(user), connections = closed, "pusher user's connections terminated (on this node; other nodes close theirs)");
    Ok(json!({}))
}

fn text(status: StatusCode, message: &str) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(format!("{message}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn too_large(limit: usize) -> HttpResponse {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("Request body larger than {limit} bytes"),
    )
}

fn json_response(status: StatusCode, value: &Value) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Percent-decoding of a path segment; `None` when it is not UTF-8.
fn unescape(segment: &str) -> Option<String> {
    if !segment.contains('%') {
        return Some(segment.to_owned());
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn cut(text: &str) -> &str {
    let mut end = text.len().min(200);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = route;
        assert_eq!(r("/apps/1/events"), Some(("1".into(), Route::Events)));
        assert_eq!(
            r("/apps/1/batch_events"),
            Some(("1".into(), Route::BatchEvents))
        );
        assert_eq!(r("/apps/1/channels"), Some(("1".into(), Route::Channels)));
        assert_eq!(
            r("/apps/1/channels/presence-a/users"),
            Some(("1".into(), Route::Users("presence-a".into())))
        );
        assert_eq!(
            r("/apps/1/users/a%20b/terminate_connections"),
            Some(("1".into(), Route::Terminate("a b".into())))
        );
        for bad in [
            "/apps/",
            "/apps/1",
            "/apps/1/events/x",
            "/apps/1/channels/a/b",
            "/app/1/events",
            "/apps/1/users/%ff/terminate_connections",
        ] {
            assert_eq!(r(bad), None, "{bad}");
        }
    }

    #[test]
    fn info_attributes() {
        assert!(Info::parse(None).unwrap().is_empty());
        let i = Info::parse(Some("user_count, subscription_count")).unwrap();
        assert!(i.user_count && i.subscription_count);
        assert!(Info::parse(Some("members")).is_err());
    }

    #[test]
    fn the_body_limit_holds_a_full_batch() {
        let config = PusherConfig::default();
        assert!(max_body(&config) >= config.max_batch_events * config.max_message_bytes * 6);
    }
}
