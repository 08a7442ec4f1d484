/* lockwatch dashboard: the websocket, live refresh of the htmx partials, and plotly drawing.
 *
 * The server does the aggregation: each websocket frame is one batch (counts and a
 * small sample), and a batch makes the visible partials re-fetch, throttled by window
 * size, so the page keeps up at any event rate. No framework: htmx and plotly only.
 */
(function () {
  "use strict";

  const root = document.getElementById("lockwatch");
  if (!root) return;

  const $ = (sel) => document.querySelector(sel);
  const windowForm = $("#lw-window");
  const filters = $("#lw-filters");
  const sortForm = $("#lw-sort");
  const statusEl = $("#lw-status");
  const banner = $("#lw-banner");
  const pauseBtn = $("#lw-pause");
  const feedEl = $("#lw-feed");
  const detailUrl = root.dataset.detail; // ends in "0/"
  const wsUrl = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + root.dataset.ws;
  // Minimum ms between refreshes: heavier windows refresh less often.
  const THROTTLE = { "5m": 1000, "1h": 2000, "24h": 5000, custom: 5000 };
  const figures = window.lockwatchFigures; // figures.js
  const PLOT_CONFIG = {
    displaylogo: false,
    responsive: true,
    modeBarButtonsToRemove: ["lasso2d", "select2d", "autoScale2d"],
  };

  const state = {
    lastId: null,
    paused: false,
    socket: null,
    retry: 0,
    fatal: null,
    lastRefresh: 0,
    timer: null,
    pending: false,
    lastHeavy: 0,
    heavyTimer: null,
    frames: 0, // websocket frames received
    refreshes: 0, // live refreshes of the partials
    bytes: 0, // response bytes of the partials (compressed, as sent)
    unchanged: 0, // partials the server found unchanged (204)
  };
  window.lockwatch = state; // for tests and curious users

  function setStatus(text, cls) {
    statusEl.textContent = text;
    statusEl.className = "status " + (cls || "");
  }

  function showBanner(text) {
    banner.textContent = text;
    banner.hidden = !text;
  }

  function windowName() {
    return windowForm.elements.window.value;
  }

  // -- refreshing the partials ------------------------------------------------

  function refresh(force) {
    if (state.paused && !force) {
      state.pending = true;
      return;
    }
    const wait = state.lastRefresh + (THROTTLE[windowName()] || 3000) - Date.now();
    if (!force && wait > 0) {
      if (!state.timer) {
        state.timer = setTimeout(() => {
          state.timer = null;
          refresh(false);
        }, wait);
      }
      return;
    }
    state.lastRefresh = Date.now();
    state.pending = false;
    state.refreshes += 1;
    document.querySelectorAll(".lw-live").forEach((el) => {
      // Keep an older page of the table still while the user reads it.
      if (!force && el.id === "events-table" && filters.elements.page.value !== "1") return;
      if (!force && HEAVY.has(el.id)) return;
      htmx.trigger(el, "lw:refresh");
    });
    refreshHeavy(force);
  }

  // The heavy sections (the timeline, the doctor, the tables of call sites and endpoints)
  // refresh at most every SLOW ms under load; the last change always shows, on a timer.
  const SLOW = { "5m": 2000, "1h": 3000, "24h": 10000, custom: 10000 };
  const HEAVY = new Set(["data-timeline", "data-durations", "slowest", "doctor", "callsites", "endpoints"]);
  function refreshHeavy(force) {
    const wait = state.lastHeavy + (SLOW[windowName()] || 10000) - Date.now();
    if (!force && wait > 0) {
      if (!state.heavyTimer) {
        state.heavyTimer = setTimeout(() => {
          state.heavyTimer = null;
          if (state.paused) state.pending = true;
          else refreshHeavy(false);
        }, wait);
      }
      return;
    }
    state.lastHeavy = Date.now();
    HEAVY.forEach((id) => {
      const el = document.getElementById(id);
      if (el) htmx.trigger(el, "lw:refresh");
    });
  }

  function refreshOne(selector) {
    htmx.trigger($(selector), "lw:refresh");
  }

  // -- plotly ----------------------------------------------------------------

  function draw(holder) {
    const plot = document.getElementById(holder.dataset.plot);
    const script = holder.querySelector("script.lw-figure");
    if (!script) {
      if (plot.dataset.drawn) Plotly.purge(plot);
      delete plot.dataset.drawn;
      plot.hidden = true;
      return;
    }
    const fig = figures.expand(JSON.parse(script.textContent));
    plot.hidden = false;
    plot._lwFig = fig;
    render(plot);
    plot.dataset.drawn = "1";
    if (!plot.dataset.bound) {
      plot.dataset.bound = "1";
      plot.on("plotly_click", (ev) => {
        const point = ev.points && ev.points[0];
        if (point && point.data.meta && point.data.meta.lw_grouped) return figures.zoomTo(plot, point.customdata);
        const id = point && point.customdata && point.customdata[0];
        if (id) window.location.href = detailUrl.replace(/0\/$/, id + "/");
      });
      // Zoomed or panned: group again for the new scale.
      plot.on("plotly_relayout", () => {
        if (plot._lwGroups && !plot._lwDrawing) render(plot, true);
      });
    }
  }

  // -- the timeline: markers that would overlap drawn as one; holds still going grow --

  const render = (plot, again) => figures.render(plot, again, PLOT_CONFIG, state.skew || 0);

  let grownAt = 0;
  let edgeAt = 0;
  function growOpenHolds(now) {
    const plot = document.getElementById("plot-timeline");
    // Not under the mouse: a redraw would take the tooltip away as it is read.
    if (!plot || !plot.data || state.paused || now - grownAt < 500 || plot.matches(":hover")) return;
    grownAt = now;
    // Past the right edge of the axis: a new figure (with room) is due.
    const atEdge = figures.grow(plot, state.skew || 0, PLOT_CONFIG);
    if (atEdge && now - edgeAt > (SLOW[windowName()] || 10000)) {
      edgeAt = now;
      refreshOne("#data-timeline");
    }
  }

  document.body.addEventListener("htmx:afterSwap", (e) => {
    const target = e.detail.target;
    if (target && target.dataset && target.dataset.plot) draw(target);
    if (target && target.id === "header") heldChanged();
    if (target && target.id === "events-table" && state.scrollToEvents) {
      state.scrollToEvents = false;
      pinEvents();
    }
    if (e.detail.xhr && e.detail.xhr.status < 400 && !state.fatal) showBanner("");
  });

  // Only what changed: each live element sends the tag of what it shows, and the server
  // answers 204 (htmx then leaves it as it is) when its content would be the same.
  const shown = new Map();
  document.body.addEventListener("htmx:configRequest", (e) => {
    const tag = shown.get(e.detail.elt.id);
    if (tag) e.detail.headers["X-Lockwatch-Shown"] = tag;
  });
  document.body.addEventListener("htmx:afterRequest", (e) => {
    const xhr = e.detail.xhr;
    state.bytes += Number(xhr.getResponseHeader("Content-Length") || (xhr.responseText || "").length);
    if (xhr.status === 200) shown.set(e.detail.elt.id, xhr.getResponseHeader("ETag"));
    else if (xhr.status === 204) state.unchanged += 1;
  });

  document.body.addEventListener("htmx:responseError", (e) => {
    const text = (e.detail.xhr.responseText || "").trim().split("\n")[0];
    showBanner(text || "The server answered " + e.detail.xhr.status + ".");
  });

  document.body.addEventListener("htmx:sendError", () => {
    setStatus("server unreachable", "warn");
  });

  // -- the live feed: what the last batches brought, drawn from the frame itself --

  function feed(events) {
    // Busy errors, and waits that took long yet got the lock (a wait that gave up
    // already shows as its busy error).
    const notable = (events || []).filter(
      (ev) =>
        ev.kind === "busy" ||
        (ev.kind === "wait" && ev.outcome === "acquired" && (ev.wait_ms || 0) >= 500),
    );
    for (const ev of notable.slice(-8)) {
      // With Redis, a batch can arrive both from its process and from the store's tail.
      if (feedEl.querySelector('li[data-id="' + ev.id + '"]')) continue;
      const li = document.createElement("li");
      li.className = "feed-" + ev.kind;
      li.dataset.id = ev.id;
      const a = document.createElement("a");
      a.href = detailUrl.replace(/0\/$/, ev.id + "/");
      const what = ev.kind === "busy" ? "busy " + (ev.classification || "") : "slow wait";
      a.textContent = what + " · " + Math.round(ev.wait_ms || 0) + " ms";
      const where = document.createElement("span");
      where.className = "site";
      where.textContent = ev.call_site || "";
      const by = document.createElement("span");
      by.className = "blocker";
      by.textContent = ev.blocker_call_site ? "blocked by " + ev.blocker_call_site : "blocker: unknown";
      // When it happened (the event's own time), and how long ago, ticking.
      const at = document.createElement("time");
      // In this browser's clock: the server's and ours may differ.
      const ts = ev.ts ? ev.ts * 1000 + (state.skew || 0) : Date.now();
      at.dateTime = new Date(ts).toISOString();
      at.title = at.dateTime.replace("T", " ").slice(0, 23) + " UTC";
      li.dataset.ts = String(ts);
      li.append(at, a, where, by);
      feedEl.prepend(li);
    }
    while (feedEl.children.length > 8) feedEl.lastElementChild.remove();
    ageFeed(Date.now());
  }

  // Feed items say their age, fade, and leave: an old error must not look current.
  const FEED_FADE = 20000;
  const FEED_KEEP = 60000;
  function ageFeed(now) {
    for (const li of Array.from(feedEl.children)) {
      const age = now - Number(li.dataset.ts);
      if (age > FEED_KEEP) {
        li.remove();
        continue;
      }
      li.classList.toggle("old", age > FEED_FADE);
      const secs = Math.max(0, Math.round(age / 1000));
      li.querySelector("time").textContent = secs < 1 ? "now" : secs + " s ago";
    }
  }

  // -- the websocket -----------------------------------------------------------

  function send(message) {
    if (state.socket && state.socket.readyState === WebSocket.OPEN) {
      state.socket.send(JSON.stringify(message));
    }
  }

  function onMessage(m) {
    if (m.type === "hello") {
      const reconnect = state.lastId !== null;
      if (!reconnect || m.last_id < state.lastId) state.lastId = m.last_id;
      send({ type: "hello", after: state.lastId });
      if (state.paused) send({ type: "pause" });
      setStatus(state.paused ? "paused" : "live", state.paused ? "paused" : "live");
      if (reconnect) refresh(true); // catch up from the store
    } else if (m.type === "batch") {
      if (m.last_id) state.lastId = Math.max(state.lastId || 0, m.last_id);
      if (m.sent) state.skew = Date.now() - m.sent * 1000;
      feed(m.events);
      const stamp = new Date().toISOString().slice(11, 19);
      setStatus("live · " + stamp + " UTC", "live");
      if (m.count > 0) refresh(false);
    } else if (m.type === "error") {
      if (m.fatal) state.fatal = m.message;
      showBanner(m.message);
    }
  }

  function connect() {
    setStatus(state.retry ? "reconnecting…" : "connecting…", "warn");
    const ws = new WebSocket(wsUrl);
    state.socket = ws;
    ws.onopen = () => {
      state.retry = 0;
    };
    ws.onmessage = (e) => {
      state.frames += 1;
      let m;
      try {
        m = JSON.parse(e.data);
      } catch (err) {
        return;
      }
      onMessage(m);
    };
    ws.onclose = (e) => {
      state.socket = null;
      // Refused, logged out (4403), no channel layer (4500), a store it cannot read (4503).
      if (e.code === 4403 || e.code === 4500 || e.code === 4503) {
        setStatus("disconnected", "error");
        showBanner((state.fatal || "refused") + " Reload the page after logging in again.");
        return;
      }
      state.retry += 1;
      const delay = Math.min(250 * 2 ** state.retry, 5000);
      setStatus("reconnecting…", "warn");
      setTimeout(connect, delay);
    };
  }

  // -- controls ----------------------------------------------------------------

  pauseBtn.addEventListener("click", () => {
    state.paused = !state.paused;
    pauseBtn.setAttribute("aria-pressed", String(state.paused));
    pauseBtn.textContent = state.paused ? "▶ Resume" : "❚❚ Pause";
    if (state.paused) {
      send({ type: "pause" });
      setStatus("paused", "paused");
    } else {
      send({ type: "resume", after: state.lastId });
      setStatus("live", "live");
      refresh(true);
    }
  });

  function syncWindowFields() {
    const custom = windowName() === "custom";
    windowForm.querySelector(".custom").hidden = !custom;
    windowForm.elements.since.disabled = !custom;
    windowForm.elements.until.disabled = !custom;
  }

  function applyWindow() {
    syncWindowFields();
    if (windowName() === "custom" && !windowForm.elements.since.value.trim()) {
      windowForm.elements.since.focus();
      return;
    }
    syncUrl();
    filters.elements.page.value = "1";
    refresh(true);
  }

  windowForm.elements.window.addEventListener("change", applyWindow);
  $("#lw-apply").addEventListener("click", applyWindow);
  windowForm.addEventListener("keydown", (e) => {
    if (e.key === "Enter") applyWindow();
  });

  // The address bar keeps the window and the filters, so a reload or a shared link
  // shows the same table.
  function syncUrl(hash) {
    const query = new URLSearchParams(new FormData(windowForm));
    for (const [k, v] of new FormData(filters)) if (k !== "page") query.append(k, v);
    for (const [k, v] of Array.from(query)) if (!v) query.delete(k);
    history.replaceState(null, "", "?" + query.toString() + (hash || location.hash));
  }

  let filterTimer = null;
  function filtersChanged(now) {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(
      () => {
        filters.elements.page.value = "1";
        syncUrl();
        refreshOne("#events-table");
      },
      now === true ? 0 : 300,
    );
  }

  // Scroll to the events table and keep it there for a while: the charts above it are
  // still drawing (a reload) and would push it down, unless the user scrolls first.
  function pinEvents() {
    const section = document.getElementById("events");
    section.scrollIntoView({ block: "start" });
    const top = section.getBoundingClientRect().top;
    const until = Date.now() + 3000;
    let timer = null;
    const release = () => {
      clearInterval(timer);
      for (const name of ["wheel", "keydown", "touchstart", "mousedown"]) {
        window.removeEventListener(name, release, true);
      }
    };
    for (const name of ["wheel", "keydown", "touchstart", "mousedown"]) {
      window.addEventListener(name, release, true);
    }
    timer = setInterval(() => {
      if (Date.now() > until) return release();
      if (Math.abs(section.getBoundingClientRect().top - top) > 2) section.scrollIntoView({ block: "start" });
    }, 100);
  }

  // A call site's or an endpoint's link: its events, in view, the filter shown.
  function showEventsOf(name, value) {
    filters.reset();
    filters.elements[name].value = value;
    state.scrollToEvents = true;
    syncUrl("#events");
    filtersChanged(true);
  }
  filters.addEventListener("input", filtersChanged);
  filters.addEventListener("change", filtersChanged);
  filters.addEventListener("reset", () => setTimeout(filtersChanged, 0));

  document.addEventListener("click", (e) => {
    const link = e.target.closest("a[data-call-site], a[data-context]");
    if (link && e.button === 0 && !e.ctrlKey && !e.metaKey && !e.shiftKey) {
      const site = link.dataset.callSite;
      e.preventDefault();
      if (site) showEventsOf("call_site", site);
      else showEventsOf("context", link.dataset.context);
      return;
    }
    const clear = e.target.closest("#events-table [data-clear]");
    if (clear) {
      if (clear.dataset.clear === "all") {
        for (const el of filters.elements) if (el.name && el.name !== "page") el.value = "";
      } else if (filters.elements[clear.dataset.clear]) {
        filters.elements[clear.dataset.clear].value = "";
      }
      filtersChanged(true);
      return;
    }
    const pageBtn = e.target.closest("#events-table [data-page]");
    if (pageBtn && !pageBtn.disabled) {
      filters.elements.page.value = pageBtn.dataset.page;
      refreshOne("#events-table");
      return;
    }
    const sortBtn = e.target.closest("#callsites [data-sort]");
    if (sortBtn) {
      sortForm.elements.sort.value = sortBtn.dataset.sort;
      sortForm.elements.dir.value = sortBtn.dataset.dir;
      refreshOne("#callsites");
    }
  });

  // -- the clock: held-lock ages tick, the header is polled, feed items age out --

  // The header reads the live holder table: polled while live, so a hold shows within a
  // second even when nothing is flushed, and events/s falls to 0 when nothing arrives.
  const HEADER_EVERY = 1000;
  let headerAt = 0;
  document.body.addEventListener("htmx:beforeRequest", (e) => {
    if (e.detail.elt && e.detail.elt.id === "header") headerAt = Date.now();
  });

  // A hold began or ended (the polled header says so): the timeline draws it now, not
  // when the next batch of events comes (a hold is stored only when it ends).
  let holdsShown = "";
  function heldChanged() {
    const holds = Array.from(document.querySelectorAll("#held-now [data-hold]"))
      .map((el) => el.dataset.hold)
      .join(",");
    if (holds === holdsShown) return;
    holdsShown = holds;
    if (!state.paused) refreshOne("#data-timeline");
  }

  function tick() {
    const now = Date.now();
    growOpenHolds(now);
    document.querySelectorAll(".lw-age").forEach((el) => {
      if (!el.dataset.base) el.dataset.base = String(now);
      const age = parseFloat(el.dataset.age) + (now - Number(el.dataset.base)) / 1000;
      el.textContent = age.toFixed(1) + " s";
    });
    ageFeed(now);
    if (!state.paused && !document.hidden && now - headerAt >= HEADER_EVERY) {
      headerAt = now;
      refreshOne("#header");
    }
  }

  syncWindowFields();
  if (location.hash === "#events") state.scrollToEvents = true;
  connect();
  setInterval(tick, 200);
})();
