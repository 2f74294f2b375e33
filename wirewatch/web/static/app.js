// Wirewatch dashboard: a little vanilla JavaScript over the /v1 API. No framework, nothing from a CDN.
"use strict";

const WW = (() => {
  const toast = (text, bad) => {
    const el = document.getElementById("toast");
    if (!el) return;
    el.textContent = text;
    el.className = bad ? "show bad" : "show";
    clearTimeout(el._t);
    el._t = setTimeout(() => { el.className = ""; }, 4000);
  };

  async function api(path, opts = {}) {
    const init = { credentials: "same-origin", method: opts.method || "GET", headers: { "Accept": "application/json" } };
    if (opts.body !== undefined) {
      init.body = JSON.stringify(opts.body);
      init.headers["Content-Type"] = "application/json";
    }
    if (init.method !== "GET") init.headers["X-Wirewatch-CSRF"] = "1";
    if (opts.signal) init.signal = opts.signal;
    const res = await fetch(path, init);
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
    if (res.status === 401) { window.location = "/ui/login"; throw new Error("signed out"); }
    if (!res.ok) {
      const detail = data && data.detail !== undefined ? data.detail : text;
      const err = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
      err.status = res.status;
      throw err;
    }
    return data;
  }

  const items = (x) => {
    if (Array.isArray(x)) return x;
    if (!x || typeof x !== "object") return [];
    for (const k of ["items", "results", "data", "feeds", "deliveries", "stories", "articles", "matches"]) {
      if (Array.isArray(x[k])) return x[k];
    }
    return [];
  };

  const h = (tag, attrs = {}, ...children) => {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "style") el.style.cssText = v;  // CSSOM, allowed by the page's CSP
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  };

  const debounce = (fn, ms) => {
    let t = null;
    return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
  };

  const fmtTime = (iso) => {
    if (!iso) return "";
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toLocaleString();
  };

  const safeUrl = (u) => (typeof u === "string" && /^https?:\/\//i.test(u) ? u : null);

  return { api, items, h, debounce, toast, fmtTime, safeUrl };
})();

// ---- live matches --------------------------------------------------------------------------------------
function feedbackButtons(topicId, articleId) {
  const { h, api, toast } = WW;
  const send = (verdict) => async (ev) => {
    ev.target.disabled = true;
    try {
      const r = await api("/v1/feedback", { method: "POST", body: { topic_id: topicId, article_id: articleId, verdict } });
      toast(r.changed ? `Thanks: ${topicId} is now version ${r.topic_version}` : "Thanks, noted");
    } catch (e) { toast(e.message, true); ev.target.disabled = false; }
  };
  return h("span", { class: "fb" },
    h("button", { type: "button", "aria-label": "Relevant", onclick: send("relevant") }, "Relevant"),
    h("button", { type: "button", "aria-label": "Not relevant", onclick: send("not_relevant") }, "Not relevant"),
    h("button", { type: "button", "aria-label": "Duplicate", onclick: send("duplicate") }, "Duplicate"));
}

function matchItem(m) {
  const { h, safeUrl } = WW;
  const a = m.article || {};
  const url = safeUrl(a.url);
  const ev = m.evidence || {};
  return h("li", { class: "match new", "data-topic": m.topic_id },
    h("span", { class: "score" }, Number(m.score).toFixed(2)),
    h("span", { class: "topic" }, m.topic_id),
    url ? h("a", { href: url, rel: "noopener noreferrer", target: "_blank" }, a.title) : h("span", {}, a.title),
    h("span", { class: "source" }, a.source || ""),
    h("time", { datetime: m.classified_at }, new Date(m.classified_at).toLocaleTimeString()),
    h("span", { class: "why" }, (ev.closest || "").slice(0, 120)),
    feedbackButtons(m.topic_id, a.id));
}

function initLive() {
  const list = document.getElementById("matches");
  const state = document.getElementById("stream-state");
  for (const slot of list.querySelectorAll("span.fb")) {
    slot.replaceWith(feedbackButtons(slot.dataset.topic, slot.dataset.article));
  }
  let source = null;
  const redrawSoon = WW.debounce(drawChart, 3000);
  const connect = () => {
    if (source) source.close();
    const boxes = [...document.querySelectorAll(".topic-filter")];
    const chosen = boxes.filter((b) => b.checked).map((b) => b.value);
    for (const li of list.children) li.hidden = boxes.length > 0 && !chosen.includes(li.dataset.topic);
    const qs = chosen.length && chosen.length < boxes.length ? "?" + chosen.map((t) => "topic=" + encodeURIComponent(t)).join("&") : "";
    source = new EventSource("/v1/stream" + qs);
    source.onopen = () => { state.textContent = "live"; state.className = "pill ok"; };
    source.onerror = () => { state.textContent = "reconnecting…"; state.className = "pill warn"; };
    source.addEventListener("match", (e) => {
      const m = JSON.parse(e.data);
      list.prepend(matchItem(m));
      while (list.children.length > 200) list.lastElementChild.remove();
      redrawSoon();
    });
  };
  for (const b of document.querySelectorAll(".topic-filter")) b.addEventListener("change", connect);
  connect();
  loadStories();
  drawChart();
  setInterval(drawChart, 60000);
}

async function loadStories() {
  const { api, h, fmtTime } = WW;
  const list = document.getElementById("stories");
  if (!list) return;
  const topics = [...document.querySelectorAll(".topic-filter")].map((b) => b.value);
  const all = [];
  for (const t of topics) {
    try { all.push(...(await api(`/v1/stories?topic=${encodeURIComponent(t)}&limit=10`))); } catch (e) { /* no stories route */ }
  }
  all.sort((a, b) => String(b.updated_at).localeCompare(String(a.updated_at)));
  if (!all.length) { list.replaceChildren(h("li", { class: "muted" }, "No stories yet.")); return; }
  list.replaceChildren(...all.slice(0, 15).map((s) => h("li", {},
    h("a", { href: `/ui/stories/${encodeURIComponent(s.id)}` }, s.title), " ",
    h("span", { class: "source" }, `${s.topic_id} · ${s.article_count} article(s) from ${(s.sources || []).length} source(s) · ${fmtTime(s.updated_at)}`))));
}

const PALETTE = ["#1f6feb", "#d9480f", "#2f9e44", "#ae3ec9", "#f08c00", "#0c8599", "#c2255c", "#5c940d"];

async function drawChart() {
  const { api, h } = WW;
  const box = document.getElementById("chart");
  const legend = document.getElementById("chart-legend");
  if (!box) return;
  let data;
  try { data = await api("/v1/matches/counts?hours=24"); } catch (e) { box.textContent = e.message; return; }
  const W = 1100, H = 170, P = 30;
  const span = Math.max(1, data.until - data.since);
  let max = 1;
  for (const t of data.topics) for (const [, n] of t.buckets) max = Math.max(max, n);
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "chart-svg");
  const line = (x1, y1, x2, y2, cls) => {
    const l = document.createElementNS(NS, "line");
    Object.entries({ x1, y1, x2, y2, class: cls }).forEach(([k, v]) => l.setAttribute(k, v));
    svg.append(l);
  };
  const text = (x, y, s, anchor) => {
    const t = document.createElementNS(NS, "text");
    t.setAttribute("x", x); t.setAttribute("y", y); t.setAttribute("text-anchor", anchor || "start");
    t.textContent = s; svg.append(t);
  };
  line(P, H - P, W - 4, H - P, "axis");
  line(P, 4, P, H - P, "axis");
  text(P - 4, 12, String(max), "end");
  text(P - 4, H - P, "0", "end");
  text(P, H - 8, "24 h ago");
  text(W - 4, H - 8, "now", "end");
  legend.replaceChildren();
  data.topics.forEach((t, i) => {
    const color = PALETTE[i % PALETTE.length];
    // Every bucket in the window, zeros included, so a line never bridges a quiet stretch.
    const seen = new Map(t.buckets);
    const step = data.bucket_s;
    const filled = [];
    for (let b = Math.floor(data.since / step) * step; b <= data.until; b += step) filled.push([b, seen.get(b) || 0]);
    const pts = filled.map(([b, n]) => {
      const x = P + ((b - data.since) / span) * (W - P - 4);
      const y = H - P - (n / max) * (H - P - 8);
      return `${Math.max(P, x).toFixed(1)},${y.toFixed(1)}`;
    });
    const pl = document.createElementNS(NS, "polyline");
    pl.setAttribute("points", pts.join(" "));
    pl.setAttribute("stroke", color);
    pl.setAttribute("class", "series");
    svg.append(pl);
    for (const p of pts.filter((_, k) => filled[k][1] > 0)) {
      const c = document.createElementNS(NS, "circle");
      const [cx, cy] = p.split(",");
      c.setAttribute("cx", cx); c.setAttribute("cy", cy); c.setAttribute("r", 2.5); c.setAttribute("fill", color);
      svg.append(c);
    }
    const total = t.buckets.reduce((s, [, n]) => s + n, 0);
    legend.append(h("li", {}, h("span", { class: "swatch", style: `background:${color}` }), `${t.topic_id} (${total})`));
  });
  if (!data.topics.length) legend.append(h("li", { class: "muted" }, "No matches in the last 24 hours."));
  box.replaceChildren(svg);
}

// ---- topic editor ----------------------------------------------------------------------------------------
function topicFromForm(form) {
  const lines = (v) => v.split("\n").map((s) => s.trim()).filter(Boolean);
  const commas = (v) => v.split(",").map((s) => s.trim()).filter(Boolean);
  const f = form.elements;
  return {
    id: f.id.value.trim(), name: f.name.value.trim(), description: f.description.value,
    examples: lines(f.examples.value), counter_examples: lines(f.counter_examples.value),
    include_any: commas(f.include_any.value), include_all: commas(f.include_all.value),
    exclude: commas(f.exclude.value), threshold: Number(f.threshold.value), enabled: f.enabled.checked,
    desk: f.desk.value.trim() || null, since: f.since.value || null, until: f.until.value || null,
  };
}

function initTopicEditor() {
  const { api, h, debounce, toast, safeUrl } = WW;
  const form = document.getElementById("topic-form");
  const out = document.getElementById("preview");
  const state = document.getElementById("preview-state");
  const err = document.getElementById("form-error");
  const thr = document.getElementById("t-threshold");
  let inflight = null;
  const preview = debounce(async () => {
    const topic = topicFromForm(form);
    if (!topic.description.trim() && !topic.examples.length && !topic.name) return;
    if (inflight) inflight.abort();
    inflight = new AbortController();
    state.textContent = "scoring…"; state.className = "pill warn";
    const body = { ...topic, id: topic.id || "preview", name: topic.name || "preview" };
    try {
      const res = await api("/v1/topics/preview", { method: "POST", body, signal: inflight.signal });
      const row = (r, pass) => h("li", { class: pass ? "pass" : "fail" },
        h("span", { class: "score" }, Number(r.score).toFixed(2)), " ",
        safeUrl(r.url) ? h("a", { href: r.url, rel: "noopener noreferrer", target: "_blank" }, r.title) : r.title,
        " ", h("span", { class: "source" }, r.source || ""));
      const matches = res.matches || [];
      const near = res.near_misses || [];
      const days = Object.entries(res.per_day || {}).map(([d, n]) => `${d}: ${n}`).join(" · ");
      const items = [h("li", { class: "summary" }, `${res.matched} of ${res.articles} recent articles would match` +
        (days ? ` (${days})` : "")), ...matches.map((r) => row(r, true))];
      if (near.length) items.push(h("li", { class: "summary" }, `Near misses (${near.length})`), ...near.map((r) => row(r, false)));
      out.replaceChildren(...items);
      state.textContent = `${res.matched} would match`; state.className = "pill ok";
    } catch (e) {
      if (e.name === "AbortError") return;
      state.textContent = "preview failed"; state.className = "pill bad";
      out.replaceChildren(h("li", { class: "error" }, e.message));
    }
  }, 350);
  form.addEventListener("input", () => {
    document.getElementById("t-threshold-out").textContent = thr.value;
    preview();
  });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    err.textContent = "";
    const topic = topicFromForm(form);
    const existing = form.dataset.existing === "yes";
    try {
      const saved = await api(existing ? `/v1/topics/${encodeURIComponent(topic.id)}` : "/v1/topics",
        { method: existing ? "PUT" : "POST", body: topic });
      toast(`Saved ${saved.id || topic.id}` + (saved.version ? ` (version ${saved.version})` : ""));
      if (!existing) window.location = `/ui/topics/${encodeURIComponent(topic.id)}`;
    } catch (e) { err.textContent = e.message; }
  });
  preview();
}

// ---- subscriptions ---------------------------------------------------------------------------------------
async function loadSubscriptions() {
  const { api, h, items, toast } = WW;
  const body = document.getElementById("subs-body");
  let subs;
  try { subs = items(await api("/v1/subscriptions")); } catch (e) { body.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "error" }, e.message))); return; }
  if (!subs.length) { body.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No subscriptions yet."))); return; }
  body.replaceChildren(...subs.map((s) => h("tr", { "data-sub": s.id },
    h("td", {}, h("code", {}, s.id)), h("td", {}, s.topic_id),
    h("td", {}, `${s.channel.type} → ${s.channel.target}`), h("td", {}, s.mode), h("td", {}, s.min_score),
    h("td", {},
      h("button", { type: "button", class: "sub-test", onclick: async (ev) => {
        ev.target.disabled = true;
        try { await api(`/v1/subscriptions/${encodeURIComponent(s.id)}/test`, { method: "POST" }); toast(`Test sent to ${s.id}`); }
        catch (e) { toast(e.message, true); }
        ev.target.disabled = false;
      } }, "Send test"),
      h("button", { type: "button", class: "sub-delete", onclick: async () => {
        if (!window.confirm(`Delete subscription ${s.id}?`)) return;
        try { await api(`/v1/subscriptions/${encodeURIComponent(s.id)}`, { method: "DELETE" }); loadSubscriptions(); }
        catch (e) { toast(e.message, true); }
      } }, "Delete")))));
}

function initSubscriptions() {
  const { api, toast } = WW;
  const form = document.getElementById("sub-form");
  const err = document.getElementById("form-error");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    err.textContent = "";
    const f = form.elements;
    const body = { topic_id: f.topic_id.value, channel: { type: f.type.value, target: f.target.value.trim() },
      min_score: Number(f.min_score.value || 0) };
    if (f.id.value.trim()) body.id = f.id.value.trim();
    try {
      const saved = await api("/v1/subscriptions", { method: "POST", body });
      toast(`Subscribed ${saved.id}`);
      form.reset();
      loadSubscriptions();
    } catch (e) { err.textContent = e.message; }
  });
  loadSubscriptions();
}

// ---- feeds, deliveries, stories ------------------------------------------------------------------------
async function initFeeds() {
  const { api, h, fmtTime } = WW;
  const table = document.getElementById("feeds-table");
  let rows;
  try { rows = await api("/v1/feeds/health"); } catch (e) { WW.toast(e.message, true); return; }
  if (!rows.length) return;
  const cols = ["Feed", "Status", "Full text", "Last success", "Last error", "Errors in a row", "New items", "Rate / h", "Next check"];
  const fullText = (f) => {
    const sel = h("select", { "aria-label": `Full text for ${f.name || f.url}`, "data-full-text": f.id },
      ...[["", f.full_text_default ? `default (${f.full_text_default})` : "default"], ["auto", "auto"],
        ["always", "always"], ["never", "never"]].map(([v, label]) =>
        h("option", v === (f.full_text || "") ? { value: v, selected: "" } : { value: v }, label)));
    sel.addEventListener("change", async () => {
      try {
        await api(`/v1/feeds/${encodeURIComponent(f.id)}`, { method: "PATCH", body: { full_text: sel.value || null } });
        WW.toast("Saved");
      } catch (e) { WW.toast(e.message, true); }
    });
    return sel;
  };
  table.replaceChildren(
    h("thead", {}, h("tr", {}, ...cols.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, ...rows.map((f) => h("tr", { class: `status-${f.status}`, "data-feed": f.id },
      h("td", {}, f.name || f.url, h("br"), h("code", { class: "muted" }, f.url)),
      h("td", {}, h("span", { class: `pill ${f.status === "ok" ? "ok" : f.status === "disabled" ? "bad" : "warn"}` },
        f.status), f.quiet ? " quiet" : "", f.disabled_reason ? h("div", { class: "muted" }, f.disabled_reason) : null),
      h("td", {}, fullText(f)),
      h("td", {}, fmtTime(f.last_success) || "never"),
      h("td", {}, f.last_error ? [f.last_error, h("div", { class: "muted" }, fmtTime(f.last_error_at))] : "—"),
      h("td", {}, f.consecutive_errors ?? 0),
      h("td", {}, f.items_new ?? 0),
      h("td", {}, f.rate_per_hour ?? "—"),
      h("td", {}, f.next_due ? fmtTime(f.next_due) : "—")))));
}

async function initDeliveries() {
  const { api, h, items, fmtTime } = WW;
  const box = document.getElementById("deliveries");
  try {
    const rows = items(await api("/v1/deliveries?limit=100"));
    if (!rows.length) { box.replaceChildren(h("p", { class: "muted" }, "No deliveries yet.")); return; }
    box.replaceChildren(h("table", {},
      h("thead", {}, h("tr", {}, ...["When", "Subscription", "Topic", "Story", "Status", "Reason", "Attempts"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, ...rows.map((d) => h("tr", { class: `status-${d.status}` },
        h("td", {}, fmtTime(d.sent_at || d.recorded_at)), h("td", {}, d.subscription_id), h("td", {}, d.topic_id || ""),
        h("td", {}, h("a", { href: `/ui/stories/${encodeURIComponent(d.story_id)}` }, String(d.story_id).slice(0, 12))),
        h("td", {}, d.status), h("td", {}, d.reason || ""), h("td", {}, d.attempts ?? ""))))));
  } catch (e) { box.replaceChildren(h("p", { class: "error" }, e.message)); }
}

async function initStory() {
  const { api, h, items, fmtTime, safeUrl } = WW;
  const box = document.getElementById("story");
  try {
    const s = await api(`/v1/stories/${encodeURIComponent(box.dataset.story)}`);
    const title = s.title || s.headline || (s.lead && s.lead.title);
    if (title) document.getElementById("story-title").textContent = title;
    const arts = items(s.articles ? s.articles : s.sources ? s.sources : s);
    box.replaceChildren(...[
      h("p", { class: "muted" }, [s.topic_id ? `Topic ${s.topic_id}` : "", s.first_seen_at ? ` · first seen ${fmtTime(s.first_seen_at)}` : "",
        ` · ${s.article_count ?? arts.length} article(s)`].join("")),
      (s.sources || []).length ? h("p", {}, h("strong", {}, "Sources: "), s.sources.join(", ")) : null,
      h("ol", { class: "sources" }, ...arts.map((a) => {
        const art = a.article || a;
        const url = safeUrl(art.url);
        return h("li", {}, url ? h("a", { href: url, rel: "noopener noreferrer", target: "_blank" }, art.title || url) : (art.title || ""),
          " ", h("span", { class: "source" }, art.source || ""), " ", h("time", {}, fmtTime(art.published_at)));
      }))].filter(Boolean));
  } catch (e) { box.replaceChildren(h("p", { class: "error" }, e.message)); }
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  const init = { live: initLive, topic_edit: initTopicEditor, subscriptions: initSubscriptions, feeds: initFeeds,
    deliveries: initDeliveries, story: initStory }[page];
  if (init) init();
});
