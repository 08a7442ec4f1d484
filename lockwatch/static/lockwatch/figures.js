/* lockwatch dashboard: plotly figures as the server sends them, drawn. Texts put back
 * (charts.compact), the write-lock timeline's markers grouped by pixel, and holds
 * still going grown to now; used by lockwatch.js.
 *
 * Markers of one lane closer than GROUP_PX at the current zoom are drawn as one, with
 * their count and a tooltip of their real figures; 300 busy errors in 10 s stay
 * readable, and zooming in splits them again.
 */
(function () {
  "use strict";

  // The server sends each text of a big figure once (charts.compact): put it back.
  function expand(fig) {
    const strings = fig.strings;
    if (!strings) return fig;
    const text = (i) => (i === null || i === undefined ? i : strings[i]);
    for (const trace of fig.data) {
      const meta = trace.meta || {};
      if (meta.lw_y) trace.y = trace.y.map(text);
      if (meta.lw_columns && trace.customdata) {
        for (const row of trace.customdata) for (const j of meta.lw_columns) row[j] = text(row[j]);
      }
    }
    return fig;
  }

  // Drawn markers of one lane are at least this many pixels apart: closer ones are one
  // marker with their count, and a tooltip with their real figures.
  const GROUP_PX = 18;

  function toMs(v) {
    if (typeof v === "number") return v;
    // "2024-05-01 12:00:00.123456": naive UTC, as the server and plotly write dates.
    const m = /^(\d{4})-(\d\d)-(\d\d)(?:[ T](\d\d):(\d\d)(?::(\d\d)(\.\d+)?)?)?/.exec(String(v));
    if (!m) return NaN;
    const whole = Date.UTC(+m[1], +m[2] - 1, +m[3], +(m[4] || 0), +(m[5] || 0), +(m[6] || 0));
    return whole + (m[7] ? parseFloat(m[7]) * 1000 : 0);
  }
  const fromMs = (ms) => new Date(ms).toISOString().replace("T", " ").replace("Z", "");

  function grouped(traces, scale) {
    const [[lo, hi], width] = scale;
    const msPerPx = (hi - lo) / Math.max(width, 1);
    const out = [];
    for (const trace of traces) {
      const meta = trace.meta || {};
      if (meta.lw_links) {
        out.push(links(trace, msPerPx));
        continue;
      }
      if (!meta.lw_group || !(msPerPx > 0)) {
        out.push(trace);
        continue;
      }
      const lanes = new Map();
      trace.x.forEach((x, i) => {
        if (!lanes.has(trace.y[i])) lanes.set(trace.y[i], []);
        lanes.get(trace.y[i]).push([toMs(x), i]);
      });
      const singles = [];
      const groups = [];
      for (const [y, points] of lanes) {
        points.sort((a, b) => a[0] - b[0]);
        let g = null;
        const close = () => {
          if (g && g.points.length === 1) singles.push(g.points[0][1]);
          else if (g) groups.push(g);
        };
        for (const p of points) {
          // Closer than GROUP_PX to where the group is drawn (the middle of its span).
          if (g && (p[0] - (g.first + g.last) / 2) / msPerPx < GROUP_PX) {
            g.points.push(p);
            g.last = p[0];
          } else {
            close();
            g = { y: y, first: p[0], last: p[0], points: [p] };
          }
        }
        close();
      }
      singles.sort((a, b) => a - b);
      out.push(subset(trace, singles));
      if (groups.length) out.push(groupTrace(trace, meta.lw_group, groups));
    }
    return out;
  }

  function subset(trace, keep) {
    const pick = (values) => (Array.isArray(values) ? keep.map((i) => values[i]) : values);
    const marker = Object.assign({}, trace.marker);
    marker.color = pick(marker.color);
    if (marker.line) marker.line = Object.assign({}, marker.line, { color: pick(marker.line.color) });
    return Object.assign({}, trace, { x: pick(trace.x), y: pick(trace.y), customdata: pick(trace.customdata), marker: marker });
  }

  // The customdata of a busy or wait marker (charts.timeline_chart): id, call site,
  // context, sql, blocker's call site, its context, wait ms, class or outcome, time.
  function groupTrace(trace, kind, groups) {
    const colorOf = (i) => {
      const color = trace.marker && trace.marker.color;
      return Array.isArray(color) ? color[i] : color;
    };
    const rows = groups.map((g) => {
      const cds = g.points.map((p) => trace.customdata[p[1]]);
      const waits = cds.map((c) => Number(c[6]) || 0);
      return [
        null,
        g.points.length,
        cds[0][8],
        cds[cds.length - 1][8],
        tally(cds.map((c) => c[7])),
        Math.max(...waits),
        waits.reduce((a, b) => a + b, 0),
        tally(cds.map((c) => c[1]), 1),
        tally(cds.map((c) => c[4]), 1),
        g.first,
        g.last,
      ];
    });
    const noun = kind === "busy" ? "busy errors" : "lock waits";
    return {
      type: "scatter",
      mode: "markers+text",
      name: noun + ", grouped",
      x: groups.map((g) => fromMs((g.first + g.last) / 2)),
      y: groups.map((g) => g.y),
      text: groups.map((g) => String(g.points.length)),
      textposition: "middle center",
      textfont: { color: "#fff", size: 9 },
      marker: {
        symbol: "circle",
        size: GROUP_PX - 2,
        color: groups.map((g) => colorOf(g.points[0][1])),
        line: { width: 1, color: "#fff" },
      },
      customdata: rows,
      meta: { lw_grouped: kind },
      hovertemplate:
        "<b>%{customdata[1]} " + noun + "</b> (drawn as one at this zoom; click to zoom in)" +
        "<br><b>from</b> %{customdata[2]} <b>to</b> %{customdata[3]} UTC" +
        "<br><b>by class</b> %{customdata[4]}" +
        "<br><b>wait</b> max %{customdata[5]:.1f} ms, total %{customdata[6]:.1f} ms" +
        "<br><b>call site</b> %{customdata[7]}" +
        "<br><b>blocked by</b> %{customdata[8]}<extra></extra>",
    };
  }

  // "timeout 250 · upgrade 70"; with top, the most frequent only ("a.py:3 in f (280)
  // and 2 others").
  function tally(values, top) {
    const counts = new Map();
    for (const v of values) counts.set(v || "?", (counts.get(v || "?") || 0) + 1);
    const sorted = Array.from(counts).sort((a, b) => b[1] - a[1]);
    if (!top) return sorted.map(([v, n]) => v + " " + n).join(" · ");
    const rest = sorted.length - 1;
    return sorted[0][0] + " (" + sorted[0][1] + ")" + (rest ? " and " + rest + " other" + (rest > 1 ? "s" : "") : "");
  }

  // The dotted lines to the blocker: one per pixel bin, lane and blocker's lane.
  function links(trace, msPerPx) {
    const seen = new Set();
    const x = [];
    const y = [];
    for (let i = 0; i + 1 < trace.x.length; i += 3) {
      const key = Math.round(toMs(trace.x[i]) / msPerPx / GROUP_PX) + "|" + trace.y[i] + "|" + trace.y[i + 1];
      if (seen.has(key)) continue;
      seen.add(key);
      x.push(trace.x[i], trace.x[i + 1], null);
      y.push(trace.y[i], trace.y[i + 1], null);
    }
    return Object.assign({}, trace, { x: x, y: y });
  }

  // A hold still going: its bar and its "so far" grow from when the server drew it.
  function grown(trace, skew) {
    const at = trace.meta && trace.meta.lw_open;
    if (!at) return trace;
    const extra = Math.max(0, Date.now() - skew - at * 1000);
    return Object.assign({}, trace, {
      x: trace.x.map((v) => v + extra),
      customdata: trace.customdata.map((row) => row.map((v, j) => (j === 4 ? v + extra : v))),
    });
  }

  // Draw the figure: the marker traces grouped for the axis as it will show, the holds
  // still going grown to now. A user's zoom outlives a refresh (uirevision), so the axis
  // is checked after drawing and the markers grouped again if it is not the one guessed.
  function render(plot, again, config, skew) {
    const fig = plot._lwFig;
    const groupable = fig.data.some((t) => t.meta && t.meta.lw_group);
    const xa = plot._fullLayout && plot._fullLayout.xaxis;
    let scale = null;
    if (groupable) {
      const margin = fig.layout.margin || {};
      scale =
        again && xa
          ? [xa.range.map(toMs), xa._length]
          : [(fig.layout.xaxis.range || []).map(toMs), plot.clientWidth - (margin.l || 80) - (margin.r || 80)];
    }
    plot._lwDrawing = true;
    try {
      draws(plot, fig, scale, config, skew);
      const now = plot._fullLayout.xaxis;
      if (scale && now && now.range) {
        const shown = [now.range.map(toMs), now._length];
        const px = (shown[0][1] - shown[0][0]) / Math.max(shown[1], 1);
        const off = Math.abs(shown[0][0] - scale[0][0]) + Math.abs(shown[0][1] - scale[0][1]);
        if (!(off < px) || Math.abs(shown[1] - scale[1]) > 1) draws(plot, fig, shown, config, skew);
      }
    } finally {
      plot._lwDrawing = false;
    }
  }

  function draws(plot, fig, scale, config, skew) {
    const data = scale ? grouped(fig.data, scale) : fig.data.slice();
    plot._lwGroups = scale;
    plot._lwData = data;
    Plotly.react(plot, data.map((trace) => grown(trace, skew)), fig.layout, config);
  }

  function zoomTo(plot, cd) {
    const pad = Math.max((cd[10] - cd[9]) * 0.25, 20);
    Plotly.relayout(plot, { "xaxis.range": [fromMs(cd[9] - pad), fromMs(cd[10] + pad)] });
  }

  // Grow the bars of holds still going to now; true when one has reached the axis's end.
  // Plotly.react, not restyle: restyling a bar's x resets a date axis to linear.
  function grow(plot, skew, config) {
    const fig = plot._lwFig;
    const data = plot._lwData;
    if (!fig || !data || !data.some((t) => t.meta && t.meta.lw_open)) return false;
    const drawn = data.map((trace) => grown(trace, skew));
    Plotly.react(plot, drawn, fig.layout, config);
    const xa = plot._fullLayout.xaxis;
    const fresh = drawn.find((t) => t.meta && t.meta.lw_open);
    const end = Math.max(...fresh.base.map((b, i) => toMs(b) + fresh.x[i]));
    return Boolean(xa && end >= toMs(xa.range[1]));
  }

  window.lockwatchFigures = { expand, GROUP_PX, toMs, fromMs, grouped, grown, render, grow, zoomTo };
})();
