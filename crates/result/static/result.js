// The results page's live updates. Plain script, no build step.
//
// Connects to the WebSocket next to the page (`ws` relative to the page's URL, ws: or wss: to
// match http: or https:), so it works at / and under /result/ behind a proxy. Every message
// is a whole snapshot: {"options":[{"key","label","count"}],"total","stale","version"}.
// When the socket drops, the page says it is reconnecting and retries with capped exponential
// backoff (with jitter); the first snapshot after reconnecting resynchronises everything.
(function () {
  'use strict';

  var tally = document.getElementById('tally');
  if (!tally || !('WebSocket' in window)) {
    return;
  }
  var totalEl = document.getElementById('total');
  var staleEl = document.getElementById('stale');
  var statusEl = document.getElementById('connection');

  var FIRST_DELAY_MS = 250;
  var MAX_DELAY_MS = 10000;
  var delay = FIRST_DELAY_MS;
  var socket = null;
  var timer = null;

  // The page's rows by option key, found once.
  var rows = {};
  Array.prototype.forEach.call(tally.querySelectorAll('li[data-key]'), function (li) {
    var bar = li.querySelector('.bar');
    rows[li.getAttribute('data-key')] = {
      label: li.querySelector('.label'),
      count: li.querySelector('.count'),
      percent: li.querySelector('.percent'),
      bar: bar,
      width: widthClass(bar)
    };
  });

  function widthClass(bar) {
    var found = null;
    Array.prototype.forEach.call(bar.classList, function (c) {
      if (/^w-\d+$/.test(c)) {
        found = c;
      }
    });
    return found;
  }

  // The same words and rounding as the server's rendering.
  function words(total) {
    if (total === 0) {
      return 'No votes yet';
    }
    return total === 1 ? '1 vote' : total + ' votes';
  }

  function percent(count, total) {
    return total > 0 ? Math.round((count * 100) / total) : 0;
  }

  function flash(el) {
    el.classList.remove('changed');
    void el.offsetWidth; // restart the animation
    el.classList.add('changed');
  }

  function apply(snapshot) {
    if (!snapshot || !Array.isArray(snapshot.options) || typeof snapshot.total !== 'number') {
      return;
    }
    var total = snapshot.total;
    snapshot.options.forEach(function (option) {
      var row = rows[option.key];
      if (!row) {
        return;
      }
      var count = String(option.count);
      if (row.count.textContent !== count) {
        row.count.textContent = count;
        flash(row.count);
      }
      var p = percent(option.count, total);
      row.percent.textContent = p + '%';
      var width = 'w-' + p;
      if (row.width !== width) {
        if (row.width) {
          row.bar.classList.remove(row.width);
        }
        row.bar.classList.add(width);
        row.width = width;
      }
      if (typeof option.label === 'string' && row.label.textContent !== option.label) {
        row.label.textContent = option.label;
      }
    });
    totalEl.textContent = words(total);
    totalEl.setAttribute('data-total', String(total));
    staleEl.hidden = !snapshot.stale;
  }

  function show(state) {
    statusEl.setAttribute('data-state', state);
    statusEl.textContent = state === 'live' ? 'Live' : 'Reconnecting\u2026';
    statusEl.hidden = false;
  }

  function socketUrl() {
    var url = new URL('ws', window.location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    return url.href;
  }

  function connect() {
    timer = null;
    var ws;
    try {
      ws = new WebSocket(socketUrl());
    } catch (e) {
      show('reconnecting');
      schedule();
      return;
    }
    socket = ws;
    ws.onmessage = function (event) {
      var snapshot;
      try {
        snapshot = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      delay = FIRST_DELAY_MS; // the connection works: start over after the next drop
      show('live');
      apply(snapshot);
    };
    ws.onclose = function () {
      if (socket !== ws) {
        return;
      }
      socket = null;
      show('reconnecting');
      schedule();
    };
  }

  function schedule() {
    if (timer !== null) {
      return;
    }
    var wait = delay / 2 + Math.random() * (delay / 2);
    delay = Math.min(delay * 2, MAX_DELAY_MS);
    timer = window.setTimeout(connect, wait);
  }

  // Back online or back in view: do not wait out the backoff.
  function retryNow() {
    if (socket === null && timer !== null) {
      window.clearTimeout(timer);
      connect();
    }
  }
  window.addEventListener('online', retryNow);
  document.addEventListener('visibilitychange', function () {
    if (document.visibilityState === 'visible') {
      retryNow();
    }
  });

  connect();
})();
