// The chat client: one WebSocket to /ws on this origin, no framework.
//
// Everything that comes from the network is rendered with textContent, never
// innerHTML, so a message like <script>…</script> shows as text. A dropped
// connection is retried with capped exponential backoff and jitter; a refused
// handshake is explained by asking /check.php, because browsers hide the
// HTTP status of a refused WebSocket handshake (the page only sees 1006).
'use strict';

(() => {
  const root = document.getElementById('chat');
  if (!root) return; // the form page

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
  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 30000;
  const CLOSE_REPLACED = 4001; // ws.php: the nickname was opened in another window
  // A reload, or a phone changing networks, is a leave then a join of the
  // same nickname a moment later. "bob left" waits this long, hidden, and a
  // join of bob meanwhile takes it back: no "bob left" + "bob joined".
  const LEAVE_GRACE_MS = 5000;

  const present = new Map(); // connection id -> nickname
  const shown = new Set(); // ids of the messages on screen
  const leaving = new Map(); // nickname -> { li, timer }: a "left" notice within its grace
  let newest = 0; // highest message id on screen
  let socket = null;
  let failures = 0; // connects in a row that did not reach the welcome
  let retryTimer = 0;
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
    if (shown.has(m.id)) return; // already here: history after a reconnect
    shown.add(m.id);
    byId('empty')?.remove(); // the empty room's hint
    const li = el('li', m.nick === nick ? 'msg mine' : 'msg');
    li.dataset.id = m.id;
    li.append(stamp(m.ts), el('b', 'nick', m.nick), el('span', 'text', m.text));
    if (m.id > newest) {
      newest = m.id;
      place(li);
    } else {
      // Older than what is on screen (filled in after a reconnect): keep id order.
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

  function setOnline(online) {
    input.disabled = !online;
    button.disabled = !online;
    if (online) input.focus();
  }

  // Presence is kept per connection id, so a reload (new id in, old id out)
  // never shows a nickname as gone while it is still here.
  const handlers = {
    welcome(m) {
      failures = 0;
      present.clear();
      for (const p of m.members) {
        present.set(p.id, p.nick);
        takeBackLeave(p.nick);
      }
      renderMembers();
      for (const h of m.history) addMessage(h);
      setStatus('connected', 'ok');
      setOnline(true);
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

  function connect() {
    clearTimeout(retryTimer);
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${scheme}//${location.host}/ws?${new URLSearchParams({ room, nick })}`);
    let opened = false;
    socket = ws;
    setStatus('connecting…');
    ws.onopen = () => {
      opened = true;
    };
    ws.onmessage = (event) => {
      let m;
      try {
        m = JSON.parse(event.data);
      } catch {
        return;
      }
      if (Object.hasOwn(handlers, m?.type)) handlers[m.type](m);
    };
    ws.onclose = (event) => {
      if (socket !== ws) return;
      socket = null;
      setOnline(false);
      if (stopped) return;
      if (event.code === CLOSE_REPLACED) {
        stop(event.reason || 'this nickname was opened in another window', false);
      } else if (!opened) {
        explainRefusal();
      } else {
        retry();
      }
    };
  }

  // "Equal jitter": half the capped exponential delay, plus up to as much again at random,
  // so clients dropped together do not all come back in the same instant.
  function retry() {
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** failures);
    const delay = cap / 2 + Math.random() * (cap / 2);
    failures += 1;
    setStatus(`offline, retrying in ${Math.ceil(delay / 1000)} s…`, 'down');
    retryTimer = setTimeout(connect, delay);
  }

  async function explainRefusal() {
    setStatus('checking…', 'down');
    let answer = null;
    try {
      const response = await fetch(`/check.php?${new URLSearchParams({ room, nick })}`, { cache: 'no-store' });
      answer = await response.json();
    } catch {
      // The page's server is unreachable too: treat it as a dropped connection.
    }
    if (answer && !answer.ok && answer.status >= 400 && answer.status < 500) {
      stop(answer.error, true);
    } else {
      retry(); // not refused for a reason of ours (the daemon is restarting, …)
    }
  }

  function stop(reason, chooseAgain) {
    stopped = true;
    clearTimeout(retryTimer);
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
    if (text === '' || socket?.readyState !== WebSocket.OPEN) return;
    if (new TextEncoder().encode(text).length > MAX_TEXT_BYTES) {
      addNotice(`A message has at most ${MAX_TEXT_BYTES} bytes.`, 'error');
      return;
    }
    socket.send(JSON.stringify({ type: 'say', text }));
    input.value = '';
  });

  // Back online: no need to wait for the backoff timer.
  window.addEventListener('online', () => {
    if (!socket && !stopped) connect();
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
  connect();
})();
