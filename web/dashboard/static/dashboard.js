/* Arbiter dashboard: live regions over the event stream, an honest connection banner,
   server-clock countdowns, confirmations and once-only actions. No framework, no network
   access beyond this server. Everything inserted from an event goes in as text, never HTML. */
(function () {
  "use strict";

  var STREAM_URL = "/api/v1/events/stream";
  var STALE_AFTER_MS = 8000;      // reconnecting longer than this: the page is stale
  var REFRESH_DEBOUNCE_MS = 250;
  var body = document.body;
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  var zone = (document.querySelector('meta[name="display-zone"]') || {}).content || "UTC";

  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function fmtClock(date) {
    // The one display zone is UTC unless the server says otherwise.
    if (zone === "UTC") return pad(date.getUTCHours()) + ":" + pad(date.getUTCMinutes()) + ":" + pad(date.getUTCSeconds());
    try { return date.toLocaleTimeString("en-GB", { timeZone: zone, hour12: false }); } catch (e) { return date.toISOString().slice(11, 19); }
  }
  function fmtTime(date) {
    if (zone === "UTC") return date.toISOString().slice(0, 10) + " " + fmtClock(date);
    try { return date.toLocaleString("sv-SE", { timeZone: zone, hour12: false }); } catch (e) { return date.toISOString().replace("T", " ").slice(0, 19); }
  }

  // ---- toast --------------------------------------------------------------------------------
  function toast(text, tone) {
    var el = document.getElementById("toast");
    if (!el) return;
    el.textContent = text;
    el.className = "toast " + (tone || "");
    el.hidden = false;
    clearTimeout(el._t);
    el._t = setTimeout(function () { el.hidden = true; }, 5000);
  }

  // ---- confirmation dialog ------------------------------------------------------------------
  function confirmAction(opts) {
    var dialog = document.getElementById("confirm");
    return new Promise(function (resolve) {
      if (!dialog || typeof dialog.showModal !== "function") { resolve(window.confirm(opts.body)); return; }
      dialog.querySelector(".confirm-title").textContent = opts.title || "Are you sure?";
      dialog.querySelector(".confirm-body").textContent = opts.body || "";
      dialog.querySelector(".confirm-ok").textContent = opts.ok || "Confirm";
      dialog.returnValue = "";
      var done = function () { dialog.removeEventListener("close", done); resolve(dialog.returnValue === "ok"); };
      dialog.addEventListener("close", done);
      dialog.showModal();
    });
  }

  // Forms with data-confirm ask first; every form submits once (a double click sends one).
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!(form instanceof HTMLFormElement) || form.method === "dialog" || form.id === "signin-form") return;
    if (form.dataset.submitting === "1") { ev.preventDefault(); return; }
    if (form.dataset.confirm && form.dataset.confirmed !== "1") {
      ev.preventDefault();
      confirmAction({ title: form.dataset.confirmTitle, body: form.dataset.confirm, ok: form.dataset.confirmOk })
        .then(function (ok) { if (ok) { form.dataset.confirmed = "1"; form.requestSubmit ? form.requestSubmit() : form.submit(); } });
      return;
    }
    form.dataset.submitting = "1";
    Array.prototype.forEach.call(form.querySelectorAll("button[type=submit]"), function (b) { b.disabled = true; b.classList.add("busy"); });
  }, true);

  // ---- cancel: confirmation, then one request whatever the clicks -----------------------------
  var cancelsSent = {};
  document.addEventListener("click", function (ev) {
    var button = ev.target.closest && ev.target.closest("[data-cancel-url]");
    if (!button) return;
    ev.preventDefault();
    var url = button.dataset.cancelUrl;
    if (cancelsSent[url] || button.dataset.pending === "1") return;
    button.dataset.pending = "1";
    confirmAction({ title: button.dataset.confirmTitle, body: button.dataset.confirm, ok: button.dataset.confirmOk })
      .then(function (ok) {
        if (!ok) { button.dataset.pending = ""; return; }
        if (cancelsSent[url]) return;
        cancelsSent[url] = true;
        button.disabled = true;
        button.textContent = "Cancelling…";
        return fetch(url, {
          method: "POST", credentials: "same-origin",
          headers: { "X-CSRF-Token": csrf, "Accept": "application/json", "Content-Type": "application/json" },
          body: "{}"
        }).then(function (res) {
          return res.json().catch(function () { return {}; }).then(function (data) {
            if (res.ok) { toast("Cancel requested" + (data.state ? ": order is " + data.state : ""), "good"); button.textContent = "Cancel requested"; }
            else { toast("Cancel refused: " + (data.detail || res.status), "bad"); button.textContent = "Cancel refused"; }
            refreshAll();
          });
        }).catch(function () { toast("Cancel: no answer from the server; the page will show the outcome", "bad"); cancelsSent[url] = false; button.disabled = false; button.textContent = "Cancel order"; button.dataset.pending = ""; });
      });
  });

  // ---- countdowns (monotonic clock from the server's seconds-left: wall clock never used) ---
  var loadedAt = performance.now();
  function tickCountdowns() {
    var elapsed = (performance.now() - loadedAt) / 1000;
    Array.prototype.forEach.call(document.querySelectorAll("[data-countdown]"), function (el) {
      var base = el._base;
      if (base === undefined) { base = el._base = { left: parseFloat(el.dataset.countdown), at: elapsed }; }
      var left = Math.max(0, base.left - (elapsed - base.at));
      el.textContent = left > 0 ? duration(left) : "unlocked";
      if (left <= 0) el.classList.add("expired");
    });
  }
  function duration(s) {
    s = Math.floor(s);
    var d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60), x = s % 60;
    if (d) return d + "d " + pad(h) + "h";
    if (h) return h + "h " + pad(m) + "m";
    if (m) return m + "m " + pad(x) + "s";
    return x + "s";
  }

  // ---- live regions -------------------------------------------------------------------------
  var regions = Array.prototype.slice.call(document.querySelectorAll("[data-region]"));
  function matches(region, event) {
    var on = (region.dataset.on || "").split(",");
    var hit = on.some(function (p) {
      p = p.trim();
      if (!p) return false;
      if (p === "*") return true;
      if (p.charAt(p.length - 1) === "*") return event.type.indexOf(p.slice(0, -1)) === 0;
      return event.type === p;
    });
    if (!hit) return false;
    if (region.dataset.order && String(event.order_id) !== region.dataset.order) return false;
    return true;
  }
  function fragmentUrl(name) {
    var params = new URLSearchParams(location.search);
    params.set("fragment", name);
    return location.pathname + "?" + params.toString();
  }
  function refresh(region) {
    if (region.dataset.frozen) return;
    if (region._inflight) { region._again = true; return; }
    region._inflight = true;
    fetch(fragmentUrl(region.dataset.region), { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (res) {
        if (res.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search); return null; }
        if (!res.ok) throw new Error("HTTP " + res.status);
        return res.text();
      })
      .then(function (html) {
        if (html === null || html === undefined) return;
        if (region.contains(document.activeElement) && document.activeElement.matches("input,textarea,select")) {
          region._again = true; return;  // never yank a form from under the operator's cursor
        }
        region.innerHTML = html;  // server-rendered, autoescaped by the template engine
        region.dataset.updated = String(Date.now());
        region.classList.remove("flash"); void region.offsetWidth; region.classList.add("flash");
        loadedAt = performance.now();  // countdowns restart from the fresh seconds-left
        body.dispatchEvent(new CustomEvent("arbiter:region", { detail: region.dataset.region }));
      })
      .catch(function () { /* the banner tells the story; the next event or reconnect retries */ })
      .then(function () {
        region._inflight = false;
        if (region._again) { region._again = false; schedule(region); }
      });
  }
  function schedule(region) {
    clearTimeout(region._timer);
    region._timer = setTimeout(function () { refresh(region); }, REFRESH_DEBOUNCE_MS);
  }
  function refreshAll() { regions.forEach(schedule); }
  regions.forEach(function (region) {
    var every = parseFloat(region.dataset.every || "0");
    if (every > 0) setInterval(function () { schedule(region); }, every * 1000);
  });

  // ---- the events page: rows appended from the stream, as text ---------------------------------
  var feed = document.querySelector("[data-feed]");
  var seen = {};
  if (feed) Array.prototype.forEach.call(feed.querySelectorAll("tr[data-event-id]"), function (tr) { seen[tr.dataset.eventId] = true; });
  function cell(tr, label, text, cls) {
    var td = document.createElement("td");
    td.setAttribute("data-label", label);
    if (cls) td.className = cls;
    if (text instanceof Node) td.appendChild(text); else td.textContent = text;
    tr.appendChild(td);
  }
  function addToFeed(e) {
    if (!feed || !e.id || seen[e.id]) return;
    var f = feed.dataset;
    if (f.filterType && e.type !== f.filterType) return;
    if (f.filterStrategy && e.strategy !== f.filterStrategy) return;
    if (f.filterTicker && e.ticker !== f.filterTicker) return;
    seen[e.id] = true;
    var tr = document.createElement("tr");
    tr.dataset.eventId = e.id;
    tr.className = "new";
    var seq = document.createElement("span");
    seq.className = "live-tag"; seq.title = "arrived over the live stream";
    seq.textContent = e.seq != null ? String(e.seq) : "live";
    cell(tr, "Seq", seq, "num");
    var when = e.occurred_at ? new Date(e.occurred_at) : null;
    var t = document.createElement("time");
    if (when && !isNaN(when)) { t.dateTime = e.occurred_at; t.textContent = fmtTime(when); } else { t.textContent = "—"; }
    cell(tr, "When", t);
    var type = document.createElement("span"); type.className = "etype"; type.textContent = e.type;
    cell(tr, "Type", type);
    cell(tr, "Strategy", e.strategy || "—");
    cell(tr, "Ticker", e.ticker || "—");
    if (e.order_id) { var a = document.createElement("a"); a.href = "/orders/" + encodeURIComponent(e.order_id); a.textContent = "#" + e.order_id; cell(tr, "Order", a); }
    else cell(tr, "Order", "—");
    cell(tr, "Details", JSON.stringify(e.payload || {}), "payload");
    var tbody = feed.tBodies[0];
    tbody.insertBefore(tr, tbody.firstChild);
    var keep = parseInt(f.keep || "400", 10);
    while (tbody.rows.length > keep) tbody.deleteRow(tbody.rows.length - 1);
    var empty = document.querySelector(".feed-empty"); if (empty) empty.remove();
    var count = document.querySelector('[data-testid="event-count"]'); if (count) count.textContent = String(tbody.rows.length);
  }

  // ---- the stream and the banner ------------------------------------------------------------
  var banner = document.getElementById("live-banner");
  var lastSync = null;       // when the page last matched the server (an event, or a catch-up)
  var downSince = null;
  var source = null;
  var everOpen = false;
  var retryMs = 1000;
  var lastEventId = null;

  function setBanner(state) {
    if (!banner) return;
    var text;
    var asOf = lastSync ? fmtClock(lastSync) + " " + zone : "page load";
    if (state === "live") text = "Live — updates arrive as they happen";
    else if (state === "reconnecting") text = "Reconnecting to the event stream… showing data as of " + asOf;
    else if (state === "stale") text = "Stale since " + asOf + " — the event stream is down; retrying";
    else text = "Connecting to the event stream…";
    banner.className = "banner " + state;
    banner.dataset.state = state;
    if (lastSync) banner.dataset.since = lastSync.toISOString();
    banner.querySelector(".banner-text").textContent = text;
    body.dataset.liveState = state;
  }

  function onEvent(raw) {
    var e;
    try { e = JSON.parse(raw.data); } catch (err) { return; }
    if (!e || typeof e !== "object") return;
    if (raw.lastEventId) lastEventId = raw.lastEventId;
    if (!e.type && raw.type && raw.type !== "message") e.type = raw.type;
    if (!e.type) return;
    lastSync = new Date();
    addToFeed(e);
    regions.forEach(function (region) { if (matches(region, e)) schedule(region); });
    body.dispatchEvent(new CustomEvent("arbiter:event", { detail: e }));
  }

  function connect() {
    if (!window.EventSource) { setBanner("stale"); return; }
    var url = STREAM_URL;
    // A fresh EventSource cannot send Last-Event-ID itself: pass it as a parameter (an event
    // id, never a credential). The browser's own reconnects send the header.
    if (lastEventId) url += "?last_event_id=" + encodeURIComponent(lastEventId);
    source = new EventSource(url, { withCredentials: true });
    source.onopen = function () {
      retryMs = 1000;
      var wasDown = downSince !== null || everOpen;
      downSince = null;
      if (wasDown || !everOpen) {
        // Whatever happened while away, the regions re-read the server: the page matches it.
        if (everOpen) refreshAll();
      }
      everOpen = true;
      lastSync = new Date();
      setBanner("live");
    };
    source.onmessage = onEvent;
    // The server could not resume after our last event (purged from the history): re-read.
    source.addEventListener("resync", function () { if (feed) location.reload(); else refreshAll(); });
    (body.dataset.eventTypes || "").split(",").forEach(function (t) { if (t) source.addEventListener(t, onEvent); });
    source.onerror = function () {
      if (downSince === null) downSince = Date.now();
      setBanner(Date.now() - downSince > STALE_AFTER_MS ? "stale" : "reconnecting");
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (an HTTP error answer): reconnect ourselves, backing off.
        source = null;
        setTimeout(connect, retryMs);
        retryMs = Math.min(retryMs * 2, 15000);
      }
    };
  }
  setInterval(function () {
    if (downSince !== null) setBanner(Date.now() - downSince > STALE_AFTER_MS ? "stale" : "reconnecting");
    tickCountdowns();
  }, 1000);

  // For tests and operators: drop the stream on purpose, then come back (catching up).
  window.arbiterLive = {
    drop: function () { if (source) { source.close(); source = null; } downSince = Date.now(); setBanner("reconnecting"); },
    resume: function () { if (!source) connect(); },
    state: function () { return body.dataset.liveState; },
    lastEventId: function () { return lastEventId; }
  };

  // ---- sign-in: errors shown in place (401, 429), never a token in a URL -------------------------
  var signin = document.getElementById("signin-form");
  if (signin) {
    signin.addEventListener("submit", function (ev) {
      ev.preventDefault();
      ev.stopImmediatePropagation();
      var err = document.getElementById("signin-error");
      var btn = document.getElementById("signin-submit");
      btn.disabled = true; btn.textContent = "Signing in…"; err.hidden = true;
      fetch("/login", { method: "POST", credentials: "same-origin", headers: { "Accept": "application/json" }, body: new FormData(signin) })
        .then(function (res) {
          if (res.ok) { location.href = signin.elements.next.value || "/"; return; }
          return res.json().catch(function () { return {}; }).then(function (data) {
            err.textContent = res.status === 429 ? "Too many wrong tokens: " + (data.detail || "wait and try again")
              : res.status === 401 ? "That token was not accepted (" + (data.detail || "unknown or revoked") + ")."
              : "Sign-in failed: " + (data.detail || ("HTTP " + res.status));
            err.hidden = false; btn.disabled = false; btn.textContent = "Sign in";
            signin.elements.token.select();
          });
        })
        .catch(function () { err.textContent = "The server did not answer."; err.hidden = false; btn.disabled = false; btn.textContent = "Sign in"; });
    }, true);
  }

  if (body.dataset.live === "on") { setBanner("connecting"); connect(); }
  tickCountdowns();
})();
