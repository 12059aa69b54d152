// Hive dashboard: follows the page's live event stream (GET /live, server-sent
// events) and lists the newest events beside the page. What else the page
// does with them (body data-refresh): the overview applies the numbers the
// coordinator pushes ("counts") and works out each swarm's pace from them,
// reading itself again only for a new swarm or agent; a list counts the
// events since it was read and offers to read it again ("banner"); a page
// about one task re-reads itself, at most once a second ("reread"); the
// workers page does that too, and every five seconds while it is visible
// ("poll"), since heartbeats change it without an event. A
// running task's output (pre#output[data-follow]) grows by the chunks after
// the last it shows, asked for once a second while the page is visible.
// Otherwise an idle page sends nothing; a cut stream reconnects and resumes
// after the last event it saw.
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
      if (fresh) {
        document.getElementById('main').replaceWith(fresh);
        pace();
      }
    } catch (_) {
      // The next event tries again.
    }
  }

  function schedule() {
    if (timer) return;
    timer = setTimeout(refresh, Math.max(0, 1000 - (Date.now() - lastRefresh)));
  }

  function seconds(value) {
    const s = Math.floor(value);
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
    return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
  }

  // Each swarm's pace on the overview, from its counts and its start:
  // elapsed, tasks finished a minute, and the time left at that pace.
  function pace() {
    const now = Date.now();
    for (const row of document.querySelectorAll('tr[data-swarm][data-created]')) {
      const count = (status) => Number(row.querySelector('td[data-status="' + status + '"]')?.textContent || 0);
      const done = count('succeeded') + count('dead') + count('cancelled');
      const left = count('blocked') + count('ready') + count('running') + count('cancelling');
      const put = (name, text) => {
        const cell = row.querySelector('td[data-pace="' + name + '"]');
        if (cell) cell.textContent = text;
      };
      if (left === 0) {
        put('elapsed', '');
        put('rate', '');
        put('left', 'finished');
        continue;
      }
      const elapsed = Math.max(1, (now - Number(row.dataset.created)) / 1000);
      const perSecond = done / elapsed;
      put('elapsed', seconds(elapsed));
      put('rate', (perSecond * 60).toFixed(1) + '/min');
      put('left', perSecond > 0 ? '~' + seconds(left / perSecond) : '–');
    }
  }

  function applyCounts(numbers) {
    const totals = {};
    let unknown = false;
    for (const [agent, counts] of Object.entries(numbers.agents)) {
      if (!document.querySelector('[data-agent="' + CSS.escape(agent) + '"]')) unknown = true;
      for (const [status, count] of Object.entries(counts)) {
        if (status !== 'oldest_ready_s') totals[status] = (totals[status] || 0) + count;
      }
    }
    for (const cell of document.querySelectorAll('[data-agent][data-status]')) {
      if (cell.dataset.swarm) continue;
      const counts = numbers.agents[cell.dataset.agent] || {};
      const value = counts[cell.dataset.status];
      cell.textContent = cell.dataset.status === 'oldest_ready_s' ? (value === undefined ? '' : seconds(value)) : String(value || 0);
    }
    const swarms = numbers.swarms || {};
    for (const id of Object.keys(swarms)) {
      if (!document.querySelector('tr[data-swarm="' + CSS.escape(id) + '"]')) unknown = true;
    }
    for (const cell of document.querySelectorAll('td[data-swarm][data-status]')) {
      const counts = swarms[cell.dataset.swarm];
      if (counts) cell.textContent = String(counts[cell.dataset.status] || 0);
    }
    for (const bar of document.querySelectorAll('progress[data-swarm]')) {
      const counts = swarms[bar.dataset.swarm];
      if (!counts) continue;
      const total = Object.values(counts).reduce((sum, n) => sum + n, 0);
      const done = (counts.succeeded || 0) + (counts.dead || 0) + (counts.cancelled || 0);
      bar.max = total;
      bar.value = done;
      const percent = document.querySelector('span[data-swarm="' + CSS.escape(bar.dataset.swarm) + '"][data-done]');
      if (percent) percent.textContent = (total ? Math.floor(done * 100 / total) : 0) + '%';
    }
    for (const cell of document.querySelectorAll('[id^="total-"]')) {
      cell.textContent = String(totals[cell.id.slice('total-'.length)] || 0);
    }
    const live = document.getElementById('workers-live');
    if (live) live.textContent = String(numbers.workers.live);
    const draining = document.getElementById('workers-draining');
    if (draining) draining.textContent = String(numbers.workers.draining);
    pace();
    // A swarm or agent the page has no row for: read the page again.
    if (unknown) schedule();
  }

  function banner() {
    const note = document.getElementById('banner');
    const count = document.getElementById('banner-count');
    if (!note || !count) return;
    count.textContent = String(Number(count.textContent) + 1);
    note.hidden = false;
  }

  let source = null;

  function connect() {
    const params = new URLSearchParams(body.dataset.live || '');
    params.set('after', body.dataset.after);
    source = new EventSource('/live?' + params.toString());
    source.onopen = () => {
      state.textContent = 'live';
      state.className = 'live-state on';
    };
    source.onmessage = (message) => {
      const event = JSON.parse(message.data);
      body.dataset.after = event.seq;
      show(event);
      // The overview lists pauses and cool-downs, which its numbers do not carry.
      const holds = /^(admin\.(pause|resume|clear_cooldown)|pause\.|cooldown\.)/.test(event.kind);
      const rereads = body.dataset.refresh === 'reread' || body.dataset.refresh === 'poll';
      if (rereads || (body.dataset.refresh === 'counts' && holds)) schedule();
      if (body.dataset.refresh === 'banner') banner();
    };
    source.addEventListener('counts', (message) => applyCounts(JSON.parse(message.data)));
    source.addEventListener('resync', () => {
      source.close();
      location.reload();
    });
    source.onerror = () => {
      state.textContent = 'reconnecting…';
      state.className = 'live-state off';
    };
  }

  let following = false;

  async function follow() {
    const output = document.getElementById('output');
    if (following || !output || !output.dataset.follow || document.visibilityState !== 'visible') return;
    following = true;
    try {
      const url = output.dataset.follow + '&after=' + encodeURIComponent(output.dataset.after);
      const response = await fetch(url, { credentials: 'same-origin' });
      if (response.ok) {
        // Spans the server escaped: the agent's text, never markup.
        const html = await response.text();
        if (html) output.insertAdjacentHTML('beforeend', html);
        output.dataset.after = response.headers.get('x-hive-after') || output.dataset.after;
      }
    } catch (_) {
      // The next tick tries again.
    } finally {
      following = false;
    }
  }

  setInterval(follow, 1000);
  setInterval(() => {
    if (body.dataset.refresh === 'poll' && document.visibilityState === 'visible') schedule();
  }, 5000);
  pace();
  setInterval(pace, 1000);

  if (list && state && body.dataset.after !== undefined) {
    connect();
    // A page left for another (and perhaps kept in the back-forward cache)
    // gives its stream back: a browser holds only a few connections to one
    // host. Shown again, it resumes after the last event it saw.
    window.addEventListener('pagehide', () => source.close());
    window.addEventListener('pageshow', (shown) => {
      if (shown.persisted) connect();
    });
  }
})();
