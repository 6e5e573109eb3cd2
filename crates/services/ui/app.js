// Romana's web view (docs/ui.md). Plain JavaScript, no framework, nothing from another origin.
// Every piece of data comes from romanad's normal API with the user's bearer token; text from
// the API only ever reaches the page as text nodes (never parsed as HTML).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  // The tokens live in this tab's sessionStorage: gone when the tab closes, never sent by the
  // browser on its own (no cookie, so no cross-site request can carry them).
  const store = window.sessionStorage;
  const S = {
    who: null,
    privileged: false,
    data: {},
    notes: {},
    // host -> {alive, since (Date or null: before this page saw it)}
    seen: {},
    host: "",
    endpoint: "",
    reach: null,
    revision: 0,
    live: "",
    refreshTimer: null,
    pollTimer: null,
    watchAbort: null,
  };

  // ---- DOM helpers: attributes and text, never HTML ----
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null && v !== false) e.setAttribute(k, String(v));
    }
    for (const k of kids.flat()) {
      if (k === null || k === undefined || k === false) continue;
      e.append(k instanceof Node ? k : document.createTextNode(String(k)));
    }
    return e;
  }
  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }
  function note(name, text) {
    const n = document.querySelector(`[data-note="${name}"]`);
    if (n) n.textContent = text || "";
  }
  const time = (d) => d.toLocaleTimeString([], { hour12: false });

  // ---- the API ----
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function refreshToken() {
    const refresh = store.getItem("romana.refresh");
    if (!refresh) return false;
    const r = await fetch("/auth/refresh", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refresh_token: refresh }),
    });
    if (!r.ok) return false;
    keep(await r.json());
    return true;
  }

  function keep(tokens) {
    store.setItem("romana.token", tokens.access_token);
    store.setItem("romana.refresh", tokens.refresh_token);
  }

  async function api(path, retried) {
    const token = store.getItem("romana.token");
    const r = await fetch(path, { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
    if (r.status === 401 && !retried && (await refreshToken())) return api(path, true);
    if (r.status === 401) {
      logout("Your session ended; log in again.");
      throw new ApiError(401, "not logged in");
    }
    if (!r.ok) {
      let msg = r.statusText;
      try {
        msg = (await r.json()).message || msg;
      } catch (_) {
        /* not our JSON body */
      }
      throw new ApiError(r.status, msg);
    }
    return r.status === 204 ? null : r.json();
  }

  // ---- log in and out ----
  async function login(ev) {
    ev.preventDefault();
    $("login-error").textContent = "";
    const username = $("user").value;
    const password = $("password").value;
    try {
      const r = await fetch("/auth/login", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ username, password }),
      });
      if (!r.ok) {
        let msg = `login refused (${r.status})`;
        try {
          msg = (await r.json()).message || msg;
        } catch (_) {
          /* keep the status */
        }
        $("login-error").textContent = msg;
        return;
      }
      keep(await r.json());
      $("password").value = "";
      await start();
    } catch (e) {
      $("login-error").textContent = `romanad did not answer: ${e.message}`;
    }
  }

  function logout(message) {
    store.removeItem("romana.token");
    store.removeItem("romana.refresh");
    stopLive();
    S.who = null;
    S.data = {};
    $("app-view").hidden = true;
    $("logout").hidden = true;
    $("who").textContent = "";
    $("live").textContent = "";
    $("login-view").hidden = false;
    $("login-error").textContent = message || "";
  }

  async function start() {
    try {
      S.who = await api("/auth/whoami");
    } catch (e) {
      if (e.status !== 401) logout(`whoami failed: ${e.message}`);
      return;
    }
    S.privileged = S.who.roles.includes("admin") || S.who.roles.includes("service");
    document.body.classList.toggle("tenant-only", !S.privileged);
    $("login-view").hidden = true;
    $("app-view").hidden = false;
    $("logout").hidden = false;
    const scope = S.who.tenants && S.who.tenants.length ? ` of ${S.who.tenants.join(", ")}` : "";
    $("who").textContent = `${S.who.name} (${S.who.roles.join(", ")}${scope})`;
    await load();
    startLive();
  }

  // ---- reading the whole picture ----
  // Each read on its own: a role that may not read one (403) still sees the others.
  async function read(key, path) {
    try {
      S.data[key] = await api(path);
      delete S.notes[key];
    } catch (e) {
      S.data[key] = null;
      S.notes[key] = e.status === 403 ? "forbidden" : e.message;
    }
  }

  async function load() {
    const reads = [
      read("tenants", "/tenants"),
      read("policies", "/policies"),
      read("netpols", "/networkpolicies"),
    ];
    if (S.privileged) {
      reads.push(
        read("topology", "/topology"),
        read("hosts", "/hosts"),
        read("blocks", "/blocks"),
        read("liveness", "/liveness"),
        read("endpoints", "/endpoints"),
        read("fabric", "/fabric"),
      );
    } else {
      reads.push(read("addresses", "/addresses"));
    }
    await Promise.all(reads);
    const hosts = hostNames();
    if (!hosts.includes(S.host)) S.host = hosts[0] || "";
    if (S.host && S.privileged) await read("routes", `/routes/${encodeURIComponent(S.host)}`);
    const eps = (S.data.endpoints || []).map((e) => e.name);
    if (!eps.includes(S.endpoint)) S.endpoint = eps[0] || "";
    if (S.endpoint) await read("reach", `/endpoints/${encodeURIComponent(S.endpoint)}/reach`);
    else S.data.reach = null;
    noteLiveness();
    render();
  }

  function hostNames() {
    return ((S.data.hosts && S.data.hosts.hosts) || []).map((h) => h.name).sort();
  }

  // Liveness carries no time: the page notes when it saw each host turn alive or dead.
  function noteLiveness() {
    const l = S.data.liveness;
    if (!l) return;
    const alive = new Set(l.alive || []);
    const monitored = new Set(l.monitored || []);
    const first = Object.keys(S.seen).length === 0;
    for (const h of hostNames()) {
      const now = alive.has(h) ? "alive" : monitored.has(h) ? "dead" : "no heartbeat yet";
      const was = S.seen[h];
      if (!was || was.state !== now) S.seen[h] = { state: now, since: first || !was ? null : new Date() };
    }
  }

  // ---- rendering ----
  function render() {
    renderTopology();
    renderHost();
    renderTenants();
    renderReach();
  }

  function forbidden(section, what) {
    note(section, `${what} needs the admin or service role; you see only your tenants' objects.`);
  }

  function hostCell(name) {
    const s = S.seen[name] || { state: "unknown", since: null };
    const cls = s.state === "alive" ? "alive" : s.state === "dead" ? "dead" : "unknown";
    const since = s.since ? ` since ${time(s.since)}` : S.seen[name] ? " (when this page opened)" : "";
    const blocks = ((S.data.blocks && S.data.blocks.blocks) || []).filter((b) => b.host === name);
    const used = blocks.reduce((a, b) => a + b.allocated_ip_count, 0);
    const cap = blocks.reduce((a, b) => a + b.capacity, 0);
    const pct = cap ? Math.round((100 * used) / cap) : 0;
    return el(
      "li",
      { class: "host", "data-host": name },
      el("button", { class: "link", type: "button", "data-pick-host": name }, name),
      " ",
      el("span", { class: `state ${cls}` }, s.state),
      el("span", { class: "muted since" }, since),
      " · ",
      el("span", { class: "blocks" }, `${blocks.length} block${blocks.length === 1 ? "" : "s"}`),
      " ",
      el("span", { class: "bar", title: `${used} of ${cap} addresses` }, el("span", { class: `w${Math.round(pct / 10)}` })),
      " ",
      el("span", { class: "muted use" }, `${used}/${cap} addresses`),
    );
  }

  function groupNode(g) {
    if (g.groups === undefined || g.groups === null) return hostCell(g.name);
    return el(
      "li",
      { class: "group", "data-group": g.name },
      el("span", { class: "label" }, g.name || "(root)"),
      " ",
      el("span", { class: "cidr" }, g.cidr || ""),
      g.groups.length ? el("ul", {}, g.groups.map(groupNode)) : el("span", { class: "muted" }, " no hosts"),
    );
  }

  function renderTopology() {
    const root = clear($("topo-tree"));
    if (!S.privileged) return forbidden("topology", "The topology");
    note("topology", S.notes.topology ? `Topology: ${S.notes.topology}` : "");
    const t = S.data.topology;
    if (!t) return;
    const nets = new Map((t.networks || []).map((n) => [n.name, n]));
    for (const topo of t.topologies || []) {
      const names = (topo.networks || []).map((n) => `${n} ${(nets.get(n) || {}).cidr || ""}`);
      root.append(el("div", { class: "network" }, el("strong", {}, names.join(", "))));
      root.append(el("ul", { class: "tree" }, (topo.map || []).map(groupNode)));
    }
    if (!(t.topologies || []).length) note("topology", "No topology yet (POST /topology).");
  }

  function routeRow(r) {
    const via = r.kind === "host" ? `${r.via || ""} ${r.via_ip || ""}`.trim() : r.via || "";
    return el("tr", { "data-dest": r.dest }, el("td", {}, r.dest), el("td", {}, r.kind), el("td", {}, via));
  }

  function renderHost() {
    const sel = clear($("host-select"));
    const rows = clear(document.querySelector("#host-routes tbody"));
    const fab = clear(document.querySelector("#fabric tbody"));
    if (!S.privileged) return forbidden("host", "Routes");
    for (const h of hostNames()) sel.append(el("option", { value: h, selected: h === S.host }, h));
    const routes = S.data.routes;
    if (routes && routes.host === S.host) {
      for (const r of routes.routes || []) rows.append(routeRow(r));
      note("host", `${(routes.routes || []).length} routes (${routes.per_block} per block, ${routes.per_endpoint} per endpoint), revision ${routes.revision}`);
    } else {
      note("host", S.host ? S.notes.routes || "" : "No hosts.");
    }
    for (const g of S.data.fabric || []) {
      fab.append(
        el(
          "tr",
          { "data-fabric-group": g.group },
          el("td", {}, g.group || "(root)"),
          el("td", {}, g.cidr),
          el("td", {}, g.announce || "-"),
          el("td", {}, (g.hosts || []).join(", ")),
          el("td", {}, (g.routes || []).map((r) => `${r.dest} → ${r.via || r.kind}`).join("; ")),
        ),
      );
    }
  }

  function policiesOf(tenant) {
    const ids = (S.data.policies || [])
      .filter((p) => (p.applied_to || []).some((a) => a.tenant === tenant))
      .map((p) => `policy ${p.id}`);
    const nps = (S.data.netpols || [])
      .filter((n) => n.metadata && n.metadata.namespace === tenant)
      .map((n) => `NetworkPolicy ${n.metadata.name}`);
    return ids.concat(nps);
  }

  function renderTenants() {
    const root = clear($("tenant-list"));
    note("tenants", S.notes.tenants ? `Tenants: ${S.notes.tenants}` : "");
    const members = S.privileged ? S.data.endpoints || [] : S.data.addresses || [];
    for (const t of S.data.tenants || []) {
      const mine = members.filter((e) => e.tenant === t.name);
      const segs = (t.segments || []).map((s) => s.name).filter((s) => s !== "");
      const pols = policiesOf(t.name);
      root.append(
        el(
          "div",
          { class: "tenant", "data-tenant": t.name },
          el("span", { class: "label" }, t.name),
          el("span", { class: "muted" }, ` isolation ${t.isolation || "none"}`),
          el("div", {}, "Segments: ", el("span", { class: "segments" }, segs.length ? segs.join(", ") : "none")),
          el("div", {}, "Policies: ", el("span", { class: "policies" }, pols.length ? pols.join(", ") : "none")),
          el(
            "ul",
            { class: "endpoints" },
            mine.map((e) =>
              el(
                "li",
                { "data-endpoint": e.name },
                S.privileged ? el("button", { class: "link", type: "button", "data-pick-endpoint": e.name }, e.name) : e.name,
                el("span", { class: "muted" }, ` ${e.ip} on ${e.host}${e.segment ? ` segment ${e.segment}` : ""}`),
              ),
            ),
          ),
        ),
      );
    }
    if (!(S.data.tenants || []).length && !S.notes.tenants) note("tenants", "No tenants you may see.");
  }

  function peerRows(peers) {
    return peers.map((p) =>
      el(
        "tr",
        { "data-peer": `${p.kind}:${p.name}` },
        el("td", {}, p.kind),
        el("td", {}, p.name, p.tenant ? el("span", { class: "muted" }, ` (${p.tenant})`) : null),
        el("td", { class: "ports" }, p.ports.join("; ")),
      ),
    );
  }

  function reachTable(title, peers) {
    return [
      el("h3", {}, title),
      peers.length
        ? el(
            "table",
            {},
            el("thead", {}, el("tr", {}, el("th", {}, "Kind"), el("th", {}, "Peer"), el("th", {}, "Allowed"))),
            el("tbody", {}, peerRows(peers)),
          )
        : el("p", { class: "muted" }, "nobody"),
    ];
  }

  function renderReach() {
    const sel = clear($("endpoint-select"));
    const out = clear($("reach-out"));
    if (!S.privileged) return forbidden("reach", "Reach");
    for (const e of S.data.endpoints || []) sel.append(el("option", { value: e.name, selected: e.name === S.endpoint }, e.name));
    const r = S.data.reach;
    if (!r) {
      note("reach", S.endpoint ? S.notes.reach || "" : "No endpoints.");
      return;
    }
    note("reach", "");
    const pols = r.policies.map((p) => `${p.id} (${p.directions.join(", ")})`);
    out.append(
      el("p", { id: "reach-summary" }, `${r.endpoint} ${r.ip} of ${r.tenant} on ${r.host}: ingress ${r.isolated_ingress ? "isolated" : "open"}, egress ${r.isolated_egress ? "isolated" : "open"}`),
      el("p", {}, "Selected by: ", el("span", { id: "reach-policies" }, pols.length ? pols.join(", ") : "no policy")),
      el("div", { id: "reach-ingress" }, reachTable("Ingress: who can open connections to it", r.ingress)),
      el("div", { id: "reach-egress" }, reachTable("Egress: what it can open connections to", r.egress)),
    );
    if ((r.problems || []).length) out.append(el("p", { class: "error" }, `Left out: ${r.problems.join("; ")}`));
  }

  // ---- live updates ----
  // Admin and service users follow GET /watch (NDJSON over fetch, which can send the token, unlike
  // EventSource); each change schedules one reload of the whole picture. Tenant users may not
  // watch (the watch cannot filter by tenant yet), so their page polls.
  // The key prefixes behind what the page shows; romanad's own bookkeeping (leader leases,
  // counters, fences, registrations) changes often and shows nothing.
  const SHOWN = ["ipam/", "liveness/", "endpoints/", "policies/", "netpols/", "routes/", "tenants/", "segments/"];

  function scheduleRefresh() {
    if (S.refreshTimer) return;
    S.refreshTimer = setTimeout(async () => {
      S.refreshTimer = null;
      if (S.who) await load();
    }, 150);
  }

  function setLive(text, on) {
    $("live").textContent = text;
    $("live").className = on ? "badge on" : "badge";
  }

  function stopLive() {
    if (S.watchAbort) S.watchAbort.abort();
    S.watchAbort = null;
    clearInterval(S.pollTimer);
    S.pollTimer = null;
  }

  function startLive() {
    stopLive();
    if (!S.privileged) {
      setLive("polling every 3 s", false);
      S.pollTimer = setInterval(() => S.who && load(), 3000);
      return;
    }
    follow(0, 500);
  }

  async function follow(from, backoff) {
    const ctl = new AbortController();
    S.watchAbort = ctl;
    try {
      const r = await fetch(`/watch?from=${from}`, {
        headers: { Authorization: `Bearer ${store.getItem("romana.token")}` },
        signal: ctl.signal,
        cache: "no-store",
      });
      if (r.status === 401 && (await refreshToken())) return follow(from, backoff);
      if (r.status === 410) return follow(0, backoff);
      if (!r.ok) throw new Error(`watch answered ${r.status}`);
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      let synced = from !== 0;
      if (synced) setLive("live", true);
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (!line.trim()) continue;
          const ev = JSON.parse(line);
          if (ev.kind === "synced") {
            S.revision = ev.revision;
            synced = true;
            setLive("live", true);
          } else if (ev.kind === "put" || ev.kind === "delete") {
            S.revision = Math.max(S.revision, ev.revision);
            if (synced && SHOWN.some((p) => ev.key.startsWith(p))) scheduleRefresh();
          } else if (ev.kind === "error") {
            throw new Error(String(ev.value));
          }
        }
      }
      throw new Error("the watch ended");
    } catch (e) {
      if (ctl.signal.aborted) return;
      setLive(`reconnecting (${e.message})`, false);
      setTimeout(() => {
        if (S.watchAbort === ctl) follow(S.revision ? S.revision + 1 : 0, Math.min(backoff * 2, 10000));
      }, backoff);
      scheduleRefresh();
    }
  }

  // ---- choices ----
  document.addEventListener("click", (ev) => {
    const t = ev.target;
    if (!(t instanceof Element)) return;
    if (t.dataset.pickHost) {
      S.host = t.dataset.pickHost;
      load();
    } else if (t.dataset.pickEndpoint) {
      S.endpoint = t.dataset.pickEndpoint;
      load();
    }
  });
  $("host-select").addEventListener("change", (ev) => {
    S.host = ev.target.value;
    load();
  });
  $("endpoint-select").addEventListener("change", (ev) => {
    S.endpoint = ev.target.value;
    load();
  });
  $("login").addEventListener("submit", login);
  $("logout").addEventListener("click", () => logout(""));

  if (store.getItem("romana.token")) start();
  else logout("");
})();
