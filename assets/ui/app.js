// The status page's script: fetches /status every two seconds and updates
// the page in place (rows are kept by key and only their text changes; no
// reload). Everything shown comes from upstreams and clients, so it is
// untrusted: it is written with textContent and createElement only, never
// as markup. The token the user pastes stays in this tab's sessionStorage
// and goes only to /status, as a bearer token.
'use strict';

(function () {
  const TOKEN_KEY = 'mcp-gateway.status-token';
  const POLL_MS = 2000;
  const $ = (id) => document.getElementById(id);

  let timer = null;
  // Each fetch's number: an answer that a later fetch overtook is dropped.
  let generation = 0;

  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || '';
    } catch (e) {
      return '';
    }
  }

  function showTokenState() {
    $('token-state').textContent = storedToken() ? 'a token is in use (this tab only)' : 'no token';
  }

  function setMessage(text, kind) {
    const m = $('message');
    m.textContent = text;
    m.className = kind || '';
  }

  // --- rendering: rows kept by key, cells written as text ---

  // Makes `tbody`'s rows those of `items`, in order: a row whose key is
  // already there is reused and only the cells whose text or class changed
  // are written, so what does not change stays as it is on the page.
  function syncRows(tbody, items, keyOf, cellsOf) {
    const existing = new Map();
    for (const tr of Array.from(tbody.rows)) existing.set(tr.dataset.key, tr);
    const seen = new Set();
    let prev = null;
    for (const item of items) {
      const key = keyOf(item);
      seen.add(key);
      let tr = existing.get(key);
      if (!tr) {
        tr = document.createElement('tr');
        tr.dataset.key = key;
      }
      const cells = cellsOf(item);
      while (tr.cells.length < cells.length) tr.insertCell();
      cells.forEach((c, i) => {
        const td = tr.cells[i];
        const text = c.text === undefined || c.text === null ? '' : String(c.text);
        if (td.textContent !== text) td.textContent = text;
        const cls = c.cls || '';
        if (td.className !== cls) td.className = cls;
      });
      const want = prev ? prev.nextSibling : tbody.firstChild;
      if (want !== tr) tbody.insertBefore(tr, want);
      prev = tr;
    }
    for (const [key, tr] of existing) if (!seen.has(key)) tr.remove();
  }

  function clearData() {
    for (const id of ['upstreams', 'tools', 'refusals']) {
      const tbody = $(id).tBodies[0];
      while (tbody.firstChild) tbody.firstChild.remove();
    }
    for (const id of ['summary', 'catalog-count', 'quarantined', 'refusal-count', 'updated']) $(id).textContent = '';
    $('data').hidden = true;
  }

  function age(ms) {
    if (typeof ms !== 'number') return '';
    const s = Math.round(ms / 1000);
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.round(s / 60) + ' min ago';
    if (s < 86400) return Math.round(s / 3600) + ' h ago';
    return Math.round(s / 86400) + ' d ago';
  }

  const word = (v) => (typeof v === 'string' ? v : '');
  const num = (v) => (typeof v === 'number' ? v : '');
  // A class name made only of the few characters a state has.
  const cls = (prefix, v) => prefix + String(v).replace(/[^a-z_]/g, '');

  function upstreamCells(u) {
    const state = word(u.state);
    let stateText = state;
    if (state === 'down' && u.down_class) stateText += ' (' + word(u.down_class) + ')';
    if (u.crash_loop === true) stateText += ', crash loop';
    const breaker = u.breaker && typeof u.breaker === 'object' ? word(u.breaker.state) : '';
    let lastError = '';
    if (u.last_error_class) {
      lastError = word(u.last_error_class) + ', ' + age(u.last_error_age_ms) + ': ' + word(u.last_error);
    }
    // A stdio process that exited: its own last words say why.
    if (state === 'down' && typeof u.last_stderr === 'string') {
      lastError += (lastError ? ' — ' : '') + 'stderr: ' + u.last_stderr;
    }
    let tools = String(num(u.tools));
    if (typeof u.tools_offered === 'number' && u.tools_offered !== u.tools) tools += ' of ' + u.tools_offered;
    return [
      { text: word(u.id), cls: 'name' },
      { text: stateText, cls: cls('state state-', state) },
      { text: breaker || '—', cls: breaker ? cls('breaker breaker-', breaker) : 'empty' },
      { text: lastError || '—', cls: lastError ? 'last-error' : 'empty' },
      { text: num(u.restarts), cls: 'restarts' },
      { text: tools, cls: 'tools' },
    ];
  }

  function annotationsText(a) {
    if (!a || typeof a !== 'object') return '';
    const parts = [];
    if (typeof a.title === 'string') parts.push('“' + a.title + '”');
    const hints = [
      ['readOnlyHint', 'read-only'],
      ['destructiveHint', 'destructive'],
      ['idempotentHint', 'idempotent'],
      ['openWorldHint', 'open world'],
    ];
    for (const [key, label] of hints) {
      if (a[key] === true) parts.push(label);
      if (a[key] === false) parts.push('not ' + label);
    }
    return parts.join(', ');
  }

  function toolCells(t) {
    const flags = [];
    if (t.quarantined === true) flags.push('quarantined');
    if (t.hidden === true) flags.push('hidden');
    if (t.cached === true) flags.push('cached');
    const annotations = annotationsText(t.annotations);
    const description = word(t.description);
    return [
      { text: word(t.name), cls: 'name' },
      { text: word(t.upstream), cls: 'mono' },
      { text: annotations || '—', cls: annotations ? 'annotations' : 'empty' },
      { text: description || '—', cls: description ? 'description' : 'empty' },
      { text: flags.join(', '), cls: t.quarantined === true ? 'flags flag-quarantined' : 'flags' },
    ];
  }

  function refusalCells(r) {
    const rules = Array.isArray(r.rules) ? r.rules.filter((x) => typeof x === 'string').join(', ') : '';
    return [
      { text: age(r.age_ms), cls: 'age' },
      { text: word(r.principal), cls: 'mono' },
      { text: word(r.name), cls: 'name' },
      { text: word(r.upstream), cls: 'mono' },
      { text: word(r.reason), cls: 'reason' },
      { text: rules || '—', cls: rules ? 'rules' : 'empty' },
    ];
  }

  function render(s) {
    const upstreams = Array.isArray(s.upstreams) ? s.upstreams : [];
    const ready = upstreams.filter((u) => u && u.state === 'ready').length;
    const count = (n, what) => (typeof n === 'number' ? n + ' ' + what + (n === 1 ? '' : 's') : null);
    const summary = [
      count(upstreams.length, 'upstream') + ' (' + ready + ' ready)',
      count(s.tools, 'tool'),
      count(s.sessions, 'session'),
      typeof s.in_flight === 'number' ? s.in_flight + ' in flight' : null,
    ];
    $('summary').textContent = summary.filter((x) => x !== null).join(' · ');
    syncRows($('upstreams').tBodies[0], upstreams, (u) => word(u.id), upstreamCells);

    const catalog = s.catalog && typeof s.catalog === 'object' ? s.catalog : {};
    const tools = Array.isArray(catalog.tools) ? catalog.tools : [];
    syncRows($('tools').tBodies[0], tools, (t) => word(t.name), toolCells);
    $('catalog-count').textContent = '(' + tools.length + ' routed)';
    const held = Array.isArray(catalog.quarantined) ? catalog.quarantined.filter((x) => typeof x === 'string') : [];
    $('quarantined').textContent = held.length
      ? 'Quarantined (changed since approved; `mcp-gateway tools approve`): ' + held.join(', ')
      : 'No tool is quarantined.';

    const refusals = Array.isArray(s.recent_refusals) ? s.recent_refusals : [];
    // Entries have no id: their time, what and why, told apart by order.
    const counts = new Map();
    const keyOf = (r) => {
      const base = [num(r.at_unix_ms), word(r.principal), word(r.name), word(r.reason)].join('\u0000');
      const n = (counts.get(base) || 0) + 1;
      counts.set(base, n);
      return base + '\u0000' + n;
    };
    syncRows($('refusals').tBodies[0], refusals, keyOf, refusalCells);
    $('refusal-count').textContent = '(' + refusals.length + ' kept)';

    $('data').hidden = false;
    $('data').className = '';
    $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  }

  // --- fetching ---

  async function refreshNow() {
    const mine = ++generation;
    const headers = { Accept: 'application/json' };
    const token = storedToken();
    if (token) headers.Authorization = 'Bearer ' + token;
    let resp;
    try {
      resp = await fetch('status', { headers, cache: 'no-store', credentials: 'omit', redirect: 'error' });
    } catch (e) {
      if (mine !== generation) return;
      setMessage('Cannot reach the gateway (' + e.message + '); showing the last data, retrying.', 'stale');
      if (!$('data').hidden) $('data').className = 'stale';
      return;
    }
    if (mine !== generation) return;
    if (resp.status === 401) {
      clearData();
      setMessage(
        token
          ? '401 Unauthorized: the gateway does not accept this token. Paste another one.'
          : '401 Unauthorized: /status needs a token. Paste an admin token above.',
        'error'
      );
      return;
    }
    if (resp.status === 403) {
      clearData();
      let why = '';
      try {
        const body = await resp.json();
        why = body && body.error && typeof body.error.message === 'string' ? body.error.message : '';
      } catch (e) {
        why = '';
      }
      if (mine !== generation) return;
      setMessage('403 Forbidden: ' + (why || 'this principal may not read /status (it is for [auth] admin_groups).'), 'error');
      return;
    }
    if (!resp.ok) {
      setMessage('/status answered ' + resp.status + '; retrying.', 'error');
      return;
    }
    let body;
    try {
      body = await resp.json();
    } catch (e) {
      if (mine !== generation) return;
      setMessage('/status answered something other than JSON; retrying.', 'error');
      return;
    }
    if (mine !== generation) return;
    setMessage('', '');
    render(body && typeof body === 'object' ? body : {});
  }

  // One chain of polls: a refresh asked for now (a new token) starts a new
  // chain, and the one it replaces schedules nothing more.
  let chain = 0;
  async function loop() {
    clearTimeout(timer);
    const me = ++chain;
    try {
      await refreshNow();
    } finally {
      if (me === chain) timer = setTimeout(loop, POLL_MS);
    }
  }

  function useToken() {
    const value = $('token').value.trim();
    $('token').value = '';
    // A header value is visible ASCII: anything else is not a token (and
    // fetch would refuse it as a header).
    if (/[^\x21-\x7e]/.test(value)) {
      setMessage('That is not a token: it has spaces or characters outside ASCII.', 'error');
      return;
    }
    try {
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) {
      setMessage('This browser keeps no sessionStorage here; the token cannot be kept.', 'error');
    }
    showTokenState();
    loop();
  }

  function forget() {
    $('token').value = '';
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) {
      // Nothing was kept.
    }
    clearData();
    showTokenState();
    loop();
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('use-token').addEventListener('click', useToken);
    $('forget').addEventListener('click', forget);
    $('token').addEventListener('keydown', (e) => {
      if (e.key === 'Enter') useToken();
    });
    showTokenState();
    loop();
  });
})();
