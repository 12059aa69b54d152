// Hive dashboard: follows the page's live event stream (GET /live, server-sent
// events), lists the newest events beside the page, and re-reads the page's
// main part at most once a second while events arrive. An idle page sends
// nothing; a cut stream reconnects and resumes after the last event it saw.
(() => {
  'use strict';
  const body = document.body;
  const list = document.getElementById('events');
  const state = document.getElementById('live-state');
  const KEEP = 200;
  let lastRefresh = 0;
  let timer = null;

  function show(event) {
    const item = document.createElement('li');
    item.dataset.seq = event.seq;
    const kind = document.createElement('span');
    kind.className = 'kind';
    kind.textContent = event.kind;
    item.append(kind);
    if (event.task_id) {
      const link = document.createElement('a');
      link.className = 'task';
      link.href = '/tasks/' + encodeURIComponent(event.task_id);
      link.textContent = event.task_id;
      item.append(' ', link);
    } else if (event.worker_id) {
      item.append(' worker ' + event.worker_id);
    } else if (event.swarm_id) {
      item.append(' swarm ' + event.swarm_id);
    }
    list.prepend(item);
    while (list.children.length > KEEP) list.lastChild.remove();
  }

  async function refresh() {
    timer = null;
    lastRefresh = Date.now();
    try {
      const response = await fetch(location.href, { credentials: 'same-origin' });
      if (!response.ok) return;
      const page = new DOMParser().parseFromString(await response.text(), 'text/html');
      const fresh = page.getElementById('main');
      if (fresh) document.getElementById('main').replaceWith(fresh);
    } catch (_) {
      // The next event tries again.
    }
  }

  function schedule() {
    if (timer) return;
    timer = setTimeout(refresh, Math.max(0, 1000 - (Date.now() - lastRefresh)));
  }

  function connect() {
    const params = new URLSearchParams(body.dataset.live || '');
    params.set('after', body.dataset.after);
    const source = new EventSource('/live?' + params.toString());
    source.onopen = () => {
      state.textContent = 'live';
      state.className = 'live-state on';
    };
    source.onmessage = (message) => {
      const event = JSON.parse(message.data);
      show(event);
      schedule();
    };
    source.addEventListener('resync', () => {
      source.close();
      location.reload();
    });
    source.onerror = () => {
      state.textContent = 'reconnecting…';
      state.className = 'live-state off';
    };
  }

  if (list && state && body.dataset.after !== undefined) connect();
})();
