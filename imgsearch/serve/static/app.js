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
    viewerClose: $("viewer-close"), viewerPrev: $("viewer-prev"), viewerNext: $("viewer-next"),
    viewerCopies: $("viewer-copies"), viewerCopiesRow: [$("viewer-copies-label"), $("viewer-copies-value")],
    home: $("home"), homeSummary: $("home-summary"), homeExamples: $("home-examples"), homeRecent: $("home-recent"),
    more: $("more"), after: $("after"), before: $("before"), sort: $("sort"),
  };
  const state = { like: null, likeName: "", timer: 0, seq: 0, controller: null, viewerId: null, info: null,
                  minScore: null,   // ?min_score= of the page URL, passed on to the API (default: the server's bar)
                  k: 0,             // photos asked for by the search shown ("more" asks for k_default more)
                  home: null };     // the latest /api/home answer (the start page)

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

  const UNREACHABLE = () => `Cannot reach the imgsearch server at ${location.origin}: is \`imgsearch serve\` still running?`;

  async function getJSON(url, signal) {
    let resp;
    try {
      resp = await fetch(url, { signal, headers: { Accept: "application/json" } });
    } catch (err) {   // no answer at all (the server stopped, the network is down): not "Failed to fetch"
      if (err.name === "AbortError") throw err;
      const e = new Error(UNREACHABLE());
      e.unreachable = true;
      throw e;
    }
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
  // the date range and sort order: they apply to every search (words, "more like this", or none: by date)
  function dateParams(p) {
    if (ui.after.value.trim()) p.set("after", ui.after.value.trim());
    if (ui.before.value.trim()) p.set("before", ui.before.value.trim());
    if (ui.sort.value && ui.sort.value !== "relevance") p.set("sort", ui.sort.value);
    if ($("near").value.trim()) p.set("near", $("near").value.trim());   // a place filter too (EXIF GPS)
    return p;
  }

  function hasDates() { return [...dateParams(new URLSearchParams()).keys()].length > 0; }

  function currentParams() {
    const p = new URLSearchParams();
    if (state.like !== null) p.set("like", String(state.like));
    if (ui.q.value.trim()) p.set("q", ui.q.value.trim());   // with like: words and photo combined
    dateParams(p);
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

  function pageSize() { return state.info ? state.info.k_default : 24; }

  // more === true: the same search, k_default more photos (rankings are prefix-stable: the first k stay)
  async function search(more) {
    clearTimeout(state.timer);
    syncUrl();
    const text = ui.q.value.trim();
    if (state.controller) state.controller.abort();
    const seq = ++state.seq;
    if (more !== true) state.k = pageSize();
    if (state.like === null && !text && !hasDates()) {
      showHome(seq);
      return;
    }
    const params = dateParams(new URLSearchParams());
    if (state.like !== null) params.set("like", String(state.like));
    if (text) {            // words, alone or with "more like this" (then both count: the API fuses them)
      params.set("q", text);
      if (ui.mode.value) params.set("mode", ui.mode.value);
      if (!ui.rerank.checked) params.set("rerank", "false");
      if (state.minScore !== null) params.set("min_score", state.minScore);
    }
    if (ui.folder.value.trim()) params.set("folder", ui.folder.value.trim());
    params.set("k", String(state.k));
    const controller = new AbortController();
    state.controller = controller;
    document.body.classList.add("busy");
    try {
      const data = await getJSON(`/api/search?${params}`, controller.signal);
      if (seq !== state.seq) return;
      showError("");
      render(data, more === true);
    } catch (err) {
      if (err.name === "AbortError" || seq !== state.seq) return;
      showError(err.message);
      ui.home.hidden = true;
      ui.more.hidden = true;
      if (more !== true) {
        ui.grid.replaceChildren();
        ui.summary.textContent = "";
      }
    } finally {
      if (seq === state.seq) document.body.classList.remove("busy");
    }
  }

  function render(data, more) {
    ui.home.hidden = true;
    if (data.count === 0) {   // the query matched nothing: an empty state instead of cards
      ui.grid.replaceChildren(el("p", "empty", data.mode === "like" ? "No similar photos" : "No matching photos"));
    } else if (more) {        // append the photos after those shown
      const shown = new Set([...ui.grid.querySelectorAll(".card")].map((c) => c.dataset.id));
      ui.grid.append(...data.results.filter((h) => !shown.has(String(h.id))).map(card));
    } else {
      ui.grid.replaceChildren(...data.results.map(card));
    }
    const kMax = state.info ? state.info.k_max : 200;
    ui.more.hidden = !(data.count >= state.k && state.k < kMax);   // fewer than asked for: that was all
    const took = `${Number(data.took_ms).toFixed(0)} ms`;
    if (data.mode === "like") {
      ui.summary.textContent = `${plural(data.count, "photo")} like ${data.like.name} in ${took}`;
      ui.clearLike.hidden = false;
    } else if (data.mode === "date") {
      ui.summary.textContent = `${plural(data.count, "photo")} by date in ${took}`;
      ui.clearLike.hidden = true;
    } else if (data.like) {
      ui.summary.textContent = `${plural(data.count, "result")} for “${data.query}” like ${data.like.name} in ${took}`;
      ui.clearLike.hidden = false;
    } else {
      const label = modeLabel(data.mode);
      const plain = data.rerank === false && data.mode === "hybrid" ? ", not re-ranked" : "";
      ui.summary.textContent = `${plural(data.count, "result")} for “${data.query}” in ${took} (${label}${plain})`;
      ui.clearLike.hidden = true;
    }
    if (data.folder) ui.summary.textContent += ` in ${data.folder}`;
    if (data.after || data.before) {
      ui.summary.textContent += `, taken ${data.after ? `from ${data.after}` : ""}${data.after && data.before ? " " : ""}` +
        `${data.before ? `to ${data.before}` : ""}`;
    }
    if (data.sort && data.sort !== "relevance") ui.summary.textContent += `, ${data.sort} first`;
    ui.grid.dataset.count = String(data.count);
  }

  function modeLabel(mode) {
    const m = state.info && state.info.modes.find((x) => x.id === mode);
    return m ? m.label : mode;
  }

  const copiesOf = new Map();   // photo id → the other paths of its file content (Hit.copies), for the viewer

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
    if (typeof hit.score === "number") {   // (recent photos on the start page have none)
      meta.append(el("span", "score", `score ${hit.score.toFixed(3)}`));
    }
    meta.append(el("span", "name", hit.name));
    if (hit.taken_at) {   // the EXIF date taken, or the file's date when the photo has none (said so)
      const fromFile = hit.date_source === "file";
      const date = el("p", "date", hit.taken_at.slice(0, 10) + (fromFile ? " (file date)" : ""));
      date.title = fromFile ? `file modified ${hit.taken_at.replace("T", " ")} (no EXIF date)`
        : `taken ${hit.taken_at.replace("T", " ")} (EXIF)`;
      date.dataset.source = hit.date_source;
      text.append(date);
    }
    meta.title = hit.path;
    text.append(meta);
    copiesOf.set(hit.id, hit.copies || []);
    if (hit.copies && hit.copies.length) {   // identical files elsewhere: one card (search/duplicates.py)
      const n = hit.copies.length;
      const badge = el("button", "copies plain", `+${n} ${n === 1 ? "copy" : "copies"}`);
      badge.type = "button";
      badge.title = hit.copies.join("\n");
      badge.addEventListener("click", () => openViewer(hit.id));
      text.append(badge);
    }
    const like = el("button", "like plain", "more like this");
    like.type = "button";
    like.addEventListener("click", () => setLike(hit.id, hit.name));
    text.append(like);
    article.append(thumb, text);
    return article;
  }

  function loadMore() {
    const kMax = state.info ? state.info.k_max : 200;
    state.k = Math.min(state.k + pageSize(), kMax);
    search(true);
  }
  ui.more.addEventListener("click", loadMore);

  // ------------------------------------------------------------------ start page
  async function showHome(seq) {
    ui.summary.textContent = "";
    ui.clearLike.hidden = true;
    ui.more.hidden = true;
    showError("");
    if (!state.home) ui.grid.replaceChildren();
    else renderHome(state.home);      // what it showed last, until the fresh answer comes
    let d;
    try {
      d = await getJSON(`/api/home?k=${pageSize()}`);
    } catch (err) {
      if (seq === state.seq) showError(err.message);
      return;
    }
    state.home = d;
    if (seq === state.seq) renderHome(d);   // unless a search started meanwhile
  }

  function renderHome(d) {
    const s = d.summary;
    if (!s.photos) {
      ui.homeSummary.textContent = "The library has no photos yet: index a folder with `imgsearch index FOLDER`.";
    } else {
      const last = s.last_index && s.last_index.finished_at
        ? `last indexed ${s.last_index.finished_at.replace("T", " ").replace("Z", " UTC")}` : "never indexed";
      ui.homeSummary.textContent = `${plural(s.photos, "photo")} in ${plural(s.folders, "folder")} · ${last}`;
    }
    ui.homeExamples.replaceChildren(ui.homeExamples.firstElementChild, ...d.suggestions.map((word) => {
      const b = el("button", "example", word);
      b.type = "button";
      b.addEventListener("click", () => { ui.q.value = word; state.like = null; search(); });
      return b;
    }));
    ui.homeExamples.hidden = d.suggestions.length === 0;
    ui.homeRecent.hidden = d.recent.length === 0;
    ui.grid.replaceChildren(...d.recent.map(card));
    ui.grid.dataset.count = String(d.recent.length);
    ui.home.hidden = false;
  }

  // "more like this": the photos like it; words typed afterwards refine them (words and photo combined).
  // The words of the search it came from wait in state.likeBase for "back to the search".
  function setLike(id, name) {
    state.like = id;
    state.likeName = name || "";
    state.likeBase = ui.q.value;
    ui.q.value = "";
    ui.q.placeholder = `add words to find among photos like ${state.likeName}`;
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
    const gps = d.gps ? `${d.gps[0].toFixed(5)}, ${d.gps[1].toFixed(5)}` : "";
    $("viewer-place").textContent = d.place ? (gps ? `${d.place} (${gps})` : d.place) : (gps || "no GPS");
    $("viewer-near").hidden = !d.gps;
    $("viewer-near").onclick = () => {   // the photos taken within 25 km of this one, by date
      ui.viewer.close();
      state.like = null;
      ui.q.value = "";
      $("near").value = `${d.gps[0].toFixed(5)},${d.gps[1].toFixed(5)}`;
      search();
    };
    $("viewer-text").textContent = d.ocr_text || "no text read";   // OCR (index --ocr)
    const dims = d.width && d.height ? `${d.width} × ${d.height} px, ` : "";
    ui.viewerSize.textContent = `${dims}${humanBytes(d.size)}`;
    ui.viewerPath.textContent = d.path;
    ui.viewerHash.textContent = d.content_hash || "–";
    const copies = copiesOf.get(d.id) || [];
    ui.viewerCopies.replaceChildren(...copies.map((p) => el("li", "path", p)));
    ui.viewerCopiesRow.forEach((node) => { node.hidden = copies.length === 0; });
    ui.viewer.dataset.id = String(d.id);
    const at = shownIds().indexOf(d.id);
    ui.viewerPrev.disabled = at <= 0;
    ui.viewerNext.disabled = at < 0 || at >= shownIds().length - 1;
    ui.viewerLike.onclick = () => { ui.viewer.close(); setLike(d.id, d.name); };
    if (!ui.viewer.open) ui.viewer.showModal();
  }

  function shownIds() { return [...ui.grid.querySelectorAll(".card")].map((c) => Number(c.dataset.id)); }

  function step(delta) {     // the previous / next photo of the grid, in its order
    const ids = shownIds();
    const at = ids.indexOf(state.viewerId);
    if (at >= 0 && at + delta >= 0 && at + delta < ids.length) openViewer(ids[at + delta]);
  }

  ui.viewerPrev.addEventListener("click", () => step(-1));
  ui.viewerNext.addEventListener("click", () => step(1));
  document.addEventListener("keydown", (ev) => {
    if (!ui.viewer.open || ev.altKey || ev.ctrlKey || ev.metaKey || ev.shiftKey) return;
    if (ev.key === "ArrowLeft" || ev.key === "ArrowRight") {
      ev.preventDefault();
      step(ev.key === "ArrowLeft" ? -1 : 1);
    } else if (ev.key === "Escape") {
      ev.preventDefault();
      ui.viewer.close();
    }
  });
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
  ui.form.addEventListener("submit", (ev) => { ev.preventDefault(); search(); });
  ui.q.addEventListener("input", schedule);        // with "more like this" on: words and photo combined
  ui.mode.addEventListener("change", () => { syncRerank(); search(); });
  ui.rerank.addEventListener("change", () => search());
  for (const box of [ui.after, ui.before]) {
    box.addEventListener("input", schedule);
    box.addEventListener("change", search);
  }
  ui.sort.addEventListener("change", () => search());
  $("near").addEventListener("change", () => search());

  function syncRerank() {   // only hybrid re-ranks: the switch means nothing in the single-signal modes
    ui.rerank.disabled = ui.mode.value !== "hybrid";
  }
  ui.folder.addEventListener("input", schedule);
  ui.folder.addEventListener("change", search);
  ui.clearLike.addEventListener("click", () => {
    state.like = null;
    if (state.likeBase !== undefined && state.likeBase !== null) ui.q.value = state.likeBase;
    state.likeBase = null;
    ui.q.placeholder = ui.q.dataset.placeholder || ui.q.placeholder;
    search();
    ui.q.focus();
  });
  ui.q.dataset.placeholder = ui.q.placeholder;

  async function init() {
    try {
      state.info = await getJSON("/api/info");
    } catch (err) {
      showError(err.unreachable ? err.message : `cannot load the page's settings: ${err.message}`);
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
    if (p.get("after")) ui.after.value = p.get("after");
    if (p.get("before")) ui.before.value = p.get("before");
    if (["newest", "oldest"].includes(p.get("sort"))) ui.sort.value = p.get("sort");
    if (p.get("near")) $("near").value = p.get("near");
    if (p.get("min_score") && isFinite(Number(p.get("min_score")))) state.minScore = String(Number(p.get("min_score")));
    if (p.get("like") && /^[0-9]+$/.test(p.get("like"))) state.like = Number(p.get("like"));
    document.body.dataset.ready = "1";
    search();   // the results of the URL's query, or the start page
    getJSON("/api/places").then((data) => {
      $("place-list").replaceChildren(...data.places.map((p) => { const o = el("option"); o.value = p.place; return o; }));
    }).catch(() => {});
    getJSON("/api/folders").then((data) => {
      ui.folders.replaceChildren(...data.folders.map((f) => { const o = el("option"); o.value = f; return o; }));
    }).catch(() => {});
  }

  init();
})();
