// The room page: Laravel Echo (broadcaster "pusher") on ws2fcgi's Pusher app,
// through the same host and port as the page (nginx hands /app/ to ws2fcgi).
// A classic script, no build step: pusher.min.js and echo.iife.js come
// unchanged from the npm packages (package-lock.json).
'use strict';

(function () {
  const root = document.getElementById('chat');
  const room = root.dataset.room;
  const me = JSON.parse(root.dataset.me);
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const status = document.getElementById('status');
  const people = document.getElementById('people');
  const messages = document.getElementById('messages');
  const form = document.getElementById('send');

  const options = {
    broadcaster: 'pusher',
    Pusher: window.Pusher,
    key: root.dataset.key,
    wsHost: location.hostname,
    wsPort: Number(location.port || 80),
    forceTLS: location.protocol === 'https:',
    enabledTransports: ['ws', 'wss'],
    cluster: '',
    disableStats: true,
    // Echo's authEndpoint is /broadcasting/auth; it sends this token along.
    csrfToken: csrf,
  };
  if (root.dataset.channelAuth === 'php') {
    // ws2fcgi's app has auth = "php": it asks the app itself (ws.php runs
    // routes/channels.php with this session's user), so the page makes no
    // request and signs nothing. pusher-js still wants an answer: an empty
    // auth, and for presence channels this user's id (the member list's
    // "me"; the server takes the member from its own answer, not from this).
    options.channelAuthorization = {
      customHandler: ({ channelName }, callback) =>
        callback(null, channelName.startsWith('presence-')
          ? { auth: '', channel_data: JSON.stringify({ user_id: me.id }) }
          : { auth: '' }),
    };
  }
  const echo = new Echo.default(options);

  const pusher = echo.connector.pusher;
  pusher.connection.bind('state_change', ({ current }) => {
    status.dataset.state = current;
    status.textContent = current;
  });

  function showMessage(message, mine) {
    const li = document.createElement('li');
    li.dataset.from = String(message.user.id);
    if (mine) li.className = 'mine';
    const who = document.createElement('b');
    who.textContent = message.user.name;
    const text = document.createElement('span');
    text.textContent = message.text;
    li.append(who, ' ', text);
    messages.append(li);
    li.scrollIntoView({ block: 'end' });
  }

  function notice(text) {
    const li = document.createElement('li');
    li.className = 'notice';
    li.textContent = text;
    messages.append(li);
  }

  function showPeople(list) {
    people.replaceChildren(
      ...list
        .slice()
        .sort((a, b) => a.name.localeCompare(b.name))
        .map((user) => {
          const li = document.createElement('li');
          li.dataset.id = String(user.id);
          li.textContent = user.name;
          return li;
        })
    );
  }

  let members = [];
  echo
    .join(`room.${room}`)
    .here((users) => {
      members = users;
      showPeople(members);
    })
    .joining((user) => {
      members = members.filter((u) => u.id !== user.id).concat([user]);
      showPeople(members);
      notice(`${user.name} joined`);
    })
    .leaving((user) => {
      members = members.filter((u) => u.id !== user.id);
      showPeople(members);
      notice(`${user.name} left`);
    })
    .listen('MessagePosted', (message) => showMessage(message, false))
    .error((error) => notice(`could not join #${room}: ${error.status || error.type || 'refused'}`));

  echo.private(`user.${me.id}`).listen('.nudge', ({ from }) => notice(`${from.name} nudged you`));

  // Echo registers X-Socket-ID for axios, jQuery and Vue; with fetch it is
  // passed by hand, so that broadcast(...)->toOthers() leaves this page out.
  function post(url, body) {
    return fetch(url, {
      method: 'POST',
      headers: {
        'Content-Type': 'application/json',
        Accept: 'application/json',
        'X-CSRF-TOKEN': csrf,
        'X-Socket-ID': echo.socketId() || '',
      },
      body: JSON.stringify(body),
    });
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const input = form.elements.text;
    const text = input.value;
    if (!text.trim()) return;
    input.value = '';
    const answer = await post(`/rooms/${encodeURIComponent(room)}/messages`, { text });
    if (answer.ok) {
      showMessage(await answer.json(), true);
    } else {
      notice(`not sent (${answer.status})`);
      input.value = text;
    }
  });

  document.getElementById('nudge').addEventListener('click', async (event) => {
    const button = event.target.closest('button[data-id]');
    if (!button) return;
    const answer = await post(`/users/${button.dataset.id}/nudge`, {});
    notice(answer.ok ? `you nudged ${button.textContent}` : `nudge failed (${answer.status})`);
  });

  // For the tests and the curious: the Echo instance.
  window.chat = { echo };
})();
