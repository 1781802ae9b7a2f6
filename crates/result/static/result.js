// The results page's live updates. Plain script, no build step.
//
// Connects to the WebSocket next to the page (`ws` relative to the page's URL, ws: or wss: to
// match http: or https:), so it works at / and under /result/ behind a proxy. Every message
// is a whole snapshot: {"options":[{"key","label","count","percent"}],"total","stale","version"}.
// The percentages come from the server (largest remainder: they add up to 100); counts are
// written with the thousands separator the server chose for the page's language
// (data-group, data-group-min on the list). One status line says Live, Reconnecting… or
// stale, never two of them at once.
// When the socket drops, the page says it is reconnecting and retries with capped exponential
// backoff (with jitter); the first snapshot after reconnecting resynchronises everything.
(function () {
  'use strict';

  var tally = document.getElementById('tally');
  if (!tally || !('WebSocket' in window)) {
    return;
  }
  var totalEl = document.getElementById('total');
  var statusEl = document.getElementById('connection');
  var groupSeparator = tally.getAttribute('data-group') || ',';
  var groupMin = parseInt(tally.getAttribute('data-group-min'), 10) || 4;
  var STATUS_TEXT = {
    live: 'Live',
    reconnecting: 'Reconnecting\u2026',
    stale: 'These results may be stale: the database cannot be reached right now.'
  };

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
      label: li.querySelector('.label .name'),
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

  // The same grouping and words as the server's rendering.
  function group(n) {
    var digits = String(n);
    if (digits.length < groupMin) {
      return digits;
    }
    var out = '';
    for (var i = 0; i < digits.length; i++) {
      if (i > 0 && (digits.length - i) % 3 === 0) {
        out += groupSeparator;
      }
      out += digits.charAt(i);
    }
    return out;
  }

  function words(total) {
    if (total === 0) {
      return 'No votes yet';
    }
    return total === 1 ? '1 vote' : group(total) + ' votes';
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
      var count = group(option.count);
      if (row.count.textContent !== count) {
        row.count.textContent = count;
        flash(row.count);
      }
      var p = typeof option.percent === 'number' ? option.percent : 0;
      row.percent.textContent = p + '%';
      row.bar.classList.toggle('none', option.count === 0);
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
    show(snapshot.stale ? 'stale' : 'live');
  }

  function show(state) {
    if (statusEl.getAttribute('data-state') !== state) {
      statusEl.setAttribute('data-state', state);
      statusEl.textContent = STATUS_TEXT[state];
    }
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
