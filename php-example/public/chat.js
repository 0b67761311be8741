// The chat client: ws2fcgi.js (served as /ws2fcgi.js) to /ws on this origin,
// no framework.
//
// ws2fcgi.js reconnects by itself (jittered backoff, at once when the browser
// is back online) and catches up: when it reconnects, the daemon sends the
// room's messages it missed from the channel's history, in order, before any
// live one. When the history no longer covers the gap (or on the first
// connection, or without ws2fcgi.v1) the page asks PHP for the messages after
// the newest it has ("backlog", from SQLite). Messages are keyed by their
// SQLite id, so one that comes both ways is shown once, and in id order.
//
// Everything that comes from the network is rendered with textContent, never
// innerHTML, so a message like <script>…</script> shows as text. A refused
// handshake is explained by asking /check.php, because browsers hide the HTTP
// status of a refused WebSocket handshake (the page only sees 1006).
import { Ws2fcgi } from '/ws2fcgi.js';

const root = document.getElementById('chat');
if (root) start(root); // else the form page

function start(root) {
  const { room, nick } = root.dataset;
  const byId = (id) => document.getElementById(id);
  const log = byId('log');
  const members = byId('members');
  const status = byId('status');
  const banner = byId('error');
  const form = byId('say');
  const input = byId('text');
  const button = form.querySelector('button');

  const MAX_TEXT_BYTES = 2000; // Rules::MAX_TEXT_BYTES
  const CLOSE_REPLACED = 4001; // ws.php: the nickname was opened in another window
  // A reload, or a phone changing networks, is a leave then a join of the
  // same nickname a moment later. "bob left" waits this long, hidden, and a
  // join of bob meanwhile takes it back: no "bob left" + "bob joined".
  const LEAVE_GRACE_MS = 5000;

  const present = new Map(); // connection id -> nickname
  const shown = new Set(); // ids of the messages on screen
  const leaving = new Map(); // nickname -> { li, timer }: a "left" notice within its grace
  let newest = 0; // highest message id on screen
  let online = false; // between the welcome and the next disconnect
  let catchUp = false; // this connection did not recover: ask for the backlog
  let stopped = false;

  const clock = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', hour12: false });

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function stamp(ts) {
    const node = el('time', '', clock.format(ts));
    node.dateTime = new Date(ts).toISOString();
    return node;
  }

  function place(node, before = null) {
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    log.insertBefore(node, before);
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  function addMessage(m) {
    if (shown.has(m.id)) return; // already here: from the page, the backlog or the channel
    shown.add(m.id);
    byId('empty')?.remove(); // the empty room's hint
    const li = el('li', m.nick === nick ? 'msg mine' : 'msg');
    li.dataset.id = m.id;
    li.append(stamp(m.ts), el('b', 'nick', m.nick), el('span', 'text', m.text));
    if (m.id > newest) {
      newest = m.id;
      place(li);
    } else {
      // Older than what is on screen (two senders at once, or a backlog): keep id order.
      const later = [...log.querySelectorAll('li[data-id]')].find((x) => Number(x.dataset.id) > m.id);
      place(li, later ?? null);
    }
  }

  function addNotice(text, kind = 'notice', ts = Date.now()) {
    const li = el('li', kind);
    li.append(stamp(ts), el('span', 'text', text));
    place(li);
    return li;
  }

  // The nickname's last connection is gone: "left", once the grace is over.
  function leaveLater(name, ts) {
    if (leaving.has(name)) return;
    const li = addNotice(`${name} left`, 'notice', ts);
    li.hidden = true; // in its place in the log, shown if nobody takes it back
    const timer = setTimeout(() => {
      leaving.delete(name);
      li.hidden = false;
    }, LEAVE_GRACE_MS);
    leaving.set(name, { li, timer });
  }

  // The nickname is back within the grace: it never left, as far as the room is concerned.
  function takeBackLeave(name) {
    const pending = leaving.get(name);
    if (!pending) return false;
    clearTimeout(pending.timer);
    pending.li.remove();
    leaving.delete(name);
    return true;
  }

  function isPresent(name) {
    return [...present.values()].includes(name);
  }

  function renderMembers() {
    const names = [...new Set(present.values())].sort((a, b) => a.localeCompare(b));
    members.replaceChildren(...names.map((name) => el('li', name === nick ? 'me' : '', name)));
  }

  function setStatus(text, state = 'busy') {
    status.textContent = text;
    status.dataset.state = state;
  }

  function setOnline(on) {
    online = on;
    input.disabled = !on;
    button.disabled = !on;
    if (on) input.focus();
  }

  function askBacklog() {
    catchUp = false;
    client.send(JSON.stringify({ type: 'backlog', after: newest }));
  }

  // Presence is kept per connection id, so a reload (new id in, old id out)
  // never shows a nickname as gone while it is still here.
  const handlers = {
    welcome(m) {
      present.clear();
      for (const p of m.members) {
        present.set(p.id, p.nick);
        takeBackLeave(p.nick);
      }
      renderMembers();
      setStatus('connected', 'ok');
      setOnline(true);
      // Now in the room's channel: what the backlog misses arrives live.
      if (catchUp) askBacklog();
    },
    backlog(m) {
      for (const message of m.messages) addMessage(message);
      if (m.more) addNotice('Some earlier messages are not shown: reload the page to see the latest 50.');
    },
    message: addMessage,
    join(m) {
      const known = isPresent(m.nick);
      present.set(m.id, m.nick);
      renderMembers();
      if (!takeBackLeave(m.nick) && !known) addNotice(`${m.nick} joined`, 'notice', m.ts);
    },
    leave(m) {
      present.delete(m.id);
      renderMembers();
      if (!isPresent(m.nick)) leaveLater(m.nick, m.ts);
    },
    error(m) {
      addNotice(m.error, 'error');
    },
  };

  function handle(data) {
    if (typeof data !== 'string') return;
    let m;
    try {
      m = JSON.parse(data);
    } catch {
      return;
    }
    if (Object.hasOwn(handlers, m?.type)) handlers[m.type](m);
  }

  // The browser's WebSocket, watched for an attempt that closes before it
  // opened: a refused handshake (or a server that is down). ws2fcgi.js
  // retries those by itself; the page asks /check.php whether to stop.
  class WatchedWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      let opened = false;
      this.addEventListener('open', () => (opened = true));
      this.addEventListener('close', () => {
        if (!opened && !stopped) explainRefusal();
      });
    }
  }

  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const client = new Ws2fcgi(`${scheme}//${location.host}/ws?${new URLSearchParams({ room, nick })}`, {
    WebSocket: WatchedWebSocket,
    minDelay: 500,
    maxDelay: 10000,
  });

  client.on('connected', ({ recovered }) => {
    // Recovered: the daemon sends what this page missed, then the welcome.
    // Not (first connection, history gone, or no ws2fcgi.v1): ask PHP.
    catchUp = !recovered;
    status.dataset.recovered = String(recovered); // how the last connection caught up (the browser test reads it)
  });
  client.on('lost', () => {
    if (online) askBacklog();
    else catchUp = true; // the welcome asks
  });
  client.on('message', handle); // for this page only: welcome, backlog, error
  client.on('publication', ({ data }) => handle(data)); // the room's messages, joins and leaves
  client.on('disconnected', ({ code, reason, willReconnect }) => {
    setOnline(false);
    if (code === CLOSE_REPLACED) {
      stop(reason || 'this nickname was opened in another window', false);
    } else if (willReconnect) {
      setStatus('offline, reconnecting…', 'down');
    } else if (!stopped) {
      stop(reason || 'the chat closed the connection', false);
    }
  });

  let checking = false;
  async function explainRefusal() {
    if (checking) return;
    checking = true;
    setStatus('checking…', 'down');
    let answer = null;
    try {
      const response = await fetch(`/check.php?${new URLSearchParams({ room, nick })}`, { cache: 'no-store' });
      answer = await response.json();
    } catch {
      // The page's server is unreachable too: ws2fcgi.js keeps trying.
    }
    checking = false;
    if (answer && !answer.ok && answer.status >= 400 && answer.status < 500) {
      stop(answer.error, true);
    } else if (!online && !stopped) {
      setStatus('offline, reconnecting…', 'down');
    }
  }

  function stop(reason, chooseAgain) {
    stopped = true;
    client.close();
    setOnline(false);
    setStatus('disconnected', 'down');
    const text = reason.charAt(0).toUpperCase() + reason.slice(1) + '.';
    banner.replaceChildren(el('span', '', text));
    if (chooseAgain) {
      const link = el('a', '', 'Choose another nickname');
      link.href = `/?${new URLSearchParams({ room })}`;
      banner.append(' ', link);
    }
    banner.hidden = false;
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (text === '' || !online) return;
    if (new TextEncoder().encode(text).length > MAX_TEXT_BYTES) {
      addNotice(`A message has at most ${MAX_TEXT_BYTES} bytes.`, 'error');
      return;
    }
    if (client.send(JSON.stringify({ type: 'say', text }))) input.value = '';
  });

  // The history index.php rendered: local times, and the ids already shown.
  for (const li of log.querySelectorAll('li[data-id]')) {
    const id = Number(li.dataset.id);
    shown.add(id);
    newest = Math.max(newest, id);
    const time = li.querySelector('time');
    time.textContent = clock.format(Number(time.dataset.ts));
  }
  log.scrollTop = log.scrollHeight;
}
