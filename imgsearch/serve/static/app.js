// imgsearch search page. Vanilla JS, no dependencies.
// Every piece of data (captions, keywords, tags, file names, paths) reaches the page through
// textContent or an attribute value, never as HTML.
"use strict";

(() => {
  const DEBOUNCE_MS = 250;
  const $ = (id) => document.getElementById(id);
  const ui = {
    form: $("search-form"), q: $("q"), mode: $("mode"), rerank: $("rerank"), folder: $("folder"), folders: $("folder-list"),
    grid: $("grid"), summary: $("summary"), error: $("error"), clearLike: $("clear-like"),
    statusToggle: $("status-toggle"), statusPanel: $("status-panel"),
    viewer: $("viewer"), viewerImg: $("viewer-img"), viewerCaption: $("viewer-caption"),
    viewerCaptions: $("viewer-captions"), viewerTags: $("viewer-tags"), viewerKeywords: $("viewer-keywords"),
    viewerTaken: $("viewer-taken"), viewerSize: $("viewer-size"), viewerPath: $("viewer-path"),
    viewerHash: $("viewer-hash"), viewerLike: $("viewer-like"), viewerOpen: $("viewer-open"),
    viewerClose: $("viewer-close"),
  };
  const state = { like: null, likeName: "", timer: 0, seq: 0, controller: null, viewerId: null, info: null,
                  minScore: null };   // ?min_score= of the page URL, passed on to the API (default: the server's bar)

  // ------------------------------------------------------------------ helpers
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function detailText(body, status) {
    if (body && typeof body.detail === "string") return body.detail;
    if (body && Array.isArray(body.detail)) return body.detail.map((d) => d.msg || String(d)).join("; ");
    return `request failed (HTTP ${status})`;
  }

  async function getJSON(url, signal) {
    const resp = await fetch(url, { signal, headers: { Accept: "application/json" } });
    let body = null;
    try { body = await resp.json(); } catch (_) { body = null; }
    if (!resp.ok) {
      const err = new Error(detailText(body, resp.status));
      err.status = resp.status;
      throw err;
    }
    return body;
  }

  function showError(message) {
    ui.error.textContent = message || "";
    ui.error.hidden = !message;
  }

  function humanBytes(n) {
    if (typeof n !== "number" || !isFinite(n)) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
  }

  function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }

  // ------------------------------------------------------------------ URL state
  function currentParams() {
    const p = new URLSearchParams();
    if (state.like !== null) p.set("like", String(state.like));
    else if (ui.q.value.trim()) p.set("q", ui.q.value.trim());
    if (ui.mode.value && ui.mode.value !== (state.info && state.info.default_mode)) p.set("mode", ui.mode.value);
    if (!ui.rerank.checked) p.set("rerank", "0");
    if (ui.folder.value.trim()) p.set("folder", ui.folder.value.trim());
    if (state.minScore !== null) p.set("min_score", state.minScore);
    return p;
  }

  function syncUrl() {
    const p = currentParams().toString();
    history.replaceState(null, "", p ? `?${p}` : location.pathname);
  }

  // ------------------------------------------------------------------ search
  function schedule() {
    clearTimeout(state.timer);
    state.timer = setTimeout(search, DEBOUNCE_MS);
  }

  async function search() {
    clearTimeout(state.timer);
    syncUrl();
    const text = ui.q.value.trim();
    if (state.controller) state.controller.abort();
    const seq = ++state.seq;
    if (state.like === null && !text) {
      ui.grid.replaceChildren();
      ui.summary.textContent = "";
      ui.clearLike.hidden = true;
      showError("");
      return;
    }
    const params = new URLSearchParams();
    if (state.like !== null) params.set("like", String(state.like));
    else {
      params.set("q", text);
      if (ui.mode.value) params.set("mode", ui.mode.value);
      if (!ui.rerank.checked) params.set("rerank", "false");
      if (state.minScore !== null) params.set("min_score", state.minScore);
    }
    if (ui.folder.value.trim()) params.set("folder", ui.folder.value.trim());
    if (state.info) params.set("k", String(state.info.k_default));
    const controller = new AbortController();
    state.controller = controller;
    document.body.classList.add("busy");
    try {
      const data = await getJSON(`/api/search?${params}`, controller.signal);
      if (seq !== state.seq) return;
      showError("");
      render(data);
    } catch (err) {
      if (err.name === "AbortError" || seq !== state.seq) return;
      showError(err.message);
      ui.grid.replaceChildren();
      ui.summary.textContent = "";
    } finally {
      if (seq === state.seq) document.body.classList.remove("busy");
    }
  }

  function render(data) {
    if (data.count === 0) {   // the query matched nothing: an empty state instead of cards
      ui.grid.replaceChildren(el("p", "empty", data.mode === "like" ? "No similar photos" : "No matching photos"));
    } else {
      ui.grid.replaceChildren(...data.results.map(card));
    }
    const took = `${Number(data.took_ms).toFixed(0)} ms`;
    if (data.mode === "like") {
      ui.summary.textContent = `${plural(data.count, "photo")} like ${data.like.name} in ${took}`;
      ui.clearLike.hidden = false;
    } else {
      const label = modeLabel(data.mode);
      const plain = data.rerank === false && data.mode === "hybrid" ? ", not re-ranked" : "";
      ui.summary.textContent = `${plural(data.count, "result")} for “${data.query}” in ${took} (${label}${plain})`;
      ui.clearLike.hidden = true;
    }
    if (data.folder) ui.summary.textContent += ` in ${data.folder}`;
    ui.grid.dataset.count = String(data.count);
  }

  function modeLabel(mode) {
    const m = state.info && state.info.modes.find((x) => x.id === mode);
    return m ? m.label : mode;
  }

  function card(hit) {
    const article = el("article", "card");
    article.dataset.id = String(hit.id);
    article.dataset.path = hit.path;
    const thumb = el("button", "thumb");
    thumb.type = "button";
    thumb.title = hit.path;
    const img = el("img");
    img.src = hit.thumb_url;
    img.alt = hit.caption;
    img.loading = "lazy";
    img.decoding = "async";
    img.addEventListener("error", () => article.classList.add("broken"), { once: true });
    thumb.append(img);
    thumb.addEventListener("click", () => openViewer(hit.id));
    const text = el("div", "card-text");
    text.append(el("p", "caption", hit.caption));
    const kws = el("p", "keywords");
    kws.textContent = hit.keywords.join(" · ");
    text.append(kws);
    const meta = el("p", "meta");
    meta.append(el("span", "score", `score ${hit.score.toFixed(3)}`), el("span", "name", hit.name));
    meta.title = hit.path;
    text.append(meta);
    const like = el("button", "like plain", "more like this");
    like.type = "button";
    like.addEventListener("click", () => setLike(hit.id, hit.name));
    text.append(like);
    article.append(thumb, text);
    return article;
  }

  function setLike(id, name) {
    state.like = id;
    state.likeName = name || "";
    search();
    window.scrollTo({ top: 0 });
  }

  // ------------------------------------------------------------------ viewer
  async function openViewer(id) {
    state.viewerId = id;
    let d;
    try {
      d = await getJSON(`/api/photo/${encodeURIComponent(id)}`);
    } catch (err) {
      showError(err.message);
      return;
    }
    if (state.viewerId !== id) return;
    ui.viewerImg.src = d.photo_url;
    ui.viewerImg.alt = d.caption;
    ui.viewerOpen.href = d.photo_url;
    ui.viewerCaption.textContent = d.caption;
    ui.viewerCaptions.replaceChildren(...d.captions.map((c) => {
      const li = el("li");
      li.append(el("span", "text", c.text), el("span", "score", c.score.toFixed(3)));
      return li;
    }));
    ui.viewerTags.replaceChildren(...d.tags.map((t) => el("li", "chip", `${t.term} ${t.score.toFixed(2)}`)));
    ui.viewerKeywords.replaceChildren(...d.keywords.map((k) => el("li", "chip", k)));
    ui.viewerTaken.textContent = d.taken_at ? d.taken_at.replace("T", " ") : "no EXIF date";
    const dims = d.width && d.height ? `${d.width} × ${d.height} px, ` : "";
    ui.viewerSize.textContent = `${dims}${humanBytes(d.size)}`;
    ui.viewerPath.textContent = d.path;
    ui.viewerHash.textContent = d.content_hash || "–";
    ui.viewer.dataset.id = String(d.id);
    ui.viewerLike.onclick = () => { ui.viewer.close(); setLike(d.id, d.name); };
    if (!ui.viewer.open) ui.viewer.showModal();
  }

  ui.viewerClose.addEventListener("click", () => ui.viewer.close());
  ui.viewer.addEventListener("click", (ev) => { if (ev.target === ui.viewer) ui.viewer.close(); });
  ui.viewer.addEventListener("close", () => { state.viewerId = null; ui.viewerImg.removeAttribute("src"); });

  // ------------------------------------------------------------------ status panel
  async function loadStatus() {
    let st;
    try {
      st = await getJSON("/api/status");
    } catch (err) {
      showError(err.message);
      return;
    }
    $("st-db").textContent = st.db_path;
    $("st-photos").textContent = String(st.photos);
    $("st-size").textContent = humanBytes(st.size_bytes);
    $("st-model").textContent = st.model_version || "–";
    const last = st.last_index;
    if (last) {
      const secs = typeof last.seconds === "number" ? ` (${last.seconds.toFixed(1)} s)` : "";
      $("st-last").textContent = `${last.finished_at}${secs}: ${last.added} added, ${last.updated} updated, ` +
        `${last.moved} moved, ${last.removed} removed, ${last.failed} failed`;
    } else {
      $("st-last").textContent = "never";
    }
    if (st.last_run_interrupted) $("st-last").textContent += " — the latest run was interrupted";
    $("st-failed").textContent = String(st.failed_files_total);
    const table = $("st-errors");
    const rows = st.failed_files.map((f) => {
      const tr = el("tr");
      const file = el("td", "path", f.path);
      tr.append(file, el("td", "reason", f.reason));
      return tr;
    });
    table.tBodies[0].replaceChildren(...rows);
    table.hidden = rows.length === 0;
  }

  ui.statusToggle.addEventListener("click", () => {
    const show = ui.statusPanel.hidden;
    ui.statusPanel.hidden = !show;
    ui.statusToggle.setAttribute("aria-expanded", String(show));
    if (show) loadStatus();
  });

  // ------------------------------------------------------------------ wiring
  ui.form.addEventListener("submit", (ev) => { ev.preventDefault(); state.like = null; search(); });
  ui.q.addEventListener("input", () => { state.like = null; schedule(); });
  ui.mode.addEventListener("change", () => { state.like = null; syncRerank(); search(); });
  ui.rerank.addEventListener("change", () => { state.like = null; search(); });

  function syncRerank() {   // only hybrid re-ranks: the switch means nothing in the single-signal modes
    ui.rerank.disabled = ui.mode.value !== "hybrid";
  }
  ui.folder.addEventListener("input", schedule);
  ui.folder.addEventListener("change", search);
  ui.clearLike.addEventListener("click", () => { state.like = null; search(); ui.q.focus(); });

  async function init() {
    try {
      state.info = await getJSON("/api/info");
    } catch (err) {
      showError(`cannot reach the server: ${err.message}`);
      return;
    }
    ui.mode.replaceChildren(...state.info.modes.map((m) => {
      const opt = el("option", null, m.label);
      opt.value = m.id;
      return opt;
    }));
    ui.q.maxLength = state.info.max_query_chars;
    const p = new URLSearchParams(location.search);
    const mode = p.get("mode");
    ui.mode.value = mode && state.info.modes.some((m) => m.id === mode) ? mode : state.info.default_mode;
    ui.rerank.checked = !["0", "false"].includes(p.get("rerank"));
    syncRerank();
    if (p.get("q")) ui.q.value = p.get("q");
    if (p.get("folder")) ui.folder.value = p.get("folder");
    if (p.get("min_score") && isFinite(Number(p.get("min_score")))) state.minScore = String(Number(p.get("min_score")));
    if (p.get("like") && /^[0-9]+$/.test(p.get("like"))) state.like = Number(p.get("like"));
    document.body.dataset.ready = "1";
    if (state.like !== null || ui.q.value.trim()) search();
    getJSON("/api/folders").then((data) => {
      ui.folders.replaceChildren(...data.folders.map((f) => { const o = el("option"); o.value = f; return o; }));
    }).catch(() => {});
  }

  init();
})();
