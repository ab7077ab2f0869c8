// gobetween dashboard: renders the snapshots of /ui/events and posts backend
// actions to the API. Every value from the server goes into the page through
// textContent or a data attribute, never as markup.
"use strict";

(function () {
  // A report counts for three report intervals (1 s by default); a member
  // heard from less recently than that is shown as late.
  const REPORT_LATE_MS = 3000;
  // Snapshots come every second; this long without one means the stream is dead
  // even if the browser has not noticed yet.
  const STALE_MS = 4000;
  const ACTIONS = ["drain", "disable", "enable"];

  const $ = (id) => document.getElementById(id);
  const cards = new Map(); // server name -> card
  let lastMessage = 0;
  let snapshotTime = 0; // the node's clock at the last snapshot
  let memberIDs = []; // the cluster's members, for the per-node verdicts

  // el builds an element; text children become text nodes.
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (k === "class") e.className = v;
        else if (k === "text") e.textContent = v;
        else if (k.startsWith("data-")) e.setAttribute(k, v);
        else e[k] = v;
      }
    }
    for (const c of children) e.append(c);
    return e;
  }

  function setText(e, text) {
    text = String(text);
    if (e.textContent !== text) e.textContent = text;
  }

  function setData(e, key, value) {
    value = String(value);
    if (e.dataset[key] !== value) e.dataset[key] = value;
  }

  const nf = new Intl.NumberFormat();
  function count(n) {
    return nf.format(n || 0);
  }

  function bytesPerSecond(n) {
    n = n || 0;
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    const digits = i === 0 || n >= 100 ? 0 : n >= 10 ? 1 : 2;
    return n.toFixed(digits) + " " + units[i];
  }

  function age(ms) {
    if (ms < 0) ms = 0;
    if (ms < 10000) return (ms / 1000).toFixed(1) + " s ago";
    if (ms < 120000) return Math.round(ms / 1000) + " s ago";
    if (ms < 7200000) return Math.round(ms / 60000) + " min ago";
    return Math.round(ms / 3600000) + " h ago";
  }

  function clock(t) {
    return t.toLocaleTimeString([], { hour12: false });
  }

  // Cluster-wide rates when the node reports them, this node's otherwise.
  function rates(b) {
    const s = b.stats || {};
    const c = s.cluster || {};
    const cluster = typeof c.rx_second === "number" && typeof c.tx_second === "number";
    return {
      rx: cluster ? c.rx_second : s.rx_second || 0,
      tx: cluster ? c.tx_second : s.tx_second || 0,
      cluster: cluster,
    };
  }

  function address(b) {
    return b.host.includes(":") ? "[" + b.host + "]:" + b.port : b.host + ":" + b.port;
  }

  // ---- live stream ----

  function setLink(state, text) {
    setData($("link"), "state", state);
    setText($("link-text"), text);
    document.body.classList.toggle("stale", state !== "live");
  }

  function connect() {
    // Built on the origin, like the actions' URLs (see act).
    const es = new EventSource(new URL("events", location.origin + location.pathname));
    es.addEventListener("open", () => setLink("live", "live"));
    es.addEventListener("error", () => setLink("down", "reconnecting…"));
    es.addEventListener("snapshot", (ev) => {
      let snap;
      try {
        snap = JSON.parse(ev.data);
      } catch (err) {
        setLink("down", "bad snapshot: " + err.message);
        return;
      }
      lastMessage = Date.now();
      setLink("live", "live");
      render(snap);
    });
    setInterval(() => {
      if (lastMessage && Date.now() - lastMessage > STALE_MS) setLink("down", "no update for " + age(Date.now() - lastMessage).replace(" ago", ""));
    }, 1000);
  }

  // ---- rendering ----

  function render(snap) {
    if (snap.error) {
      setLink("down", snap.error);
      return;
    }
    snapshotTime = Date.parse(snap.time);
    const c = snap.cluster;
    setText($("node-id"), c ? c.node_id || "—" : "standalone");
    setText($("leader-id"), c ? c.leader_id || "none" : "—");
    setData($("leader-id"), "ok", !c || !!c.leader_id);
    setText($("revision"), c ? count(c.revision) : "—");
    const healthy = snap.health === "ok" && snap.ready === "ok";
    setText($("health"), healthy ? "ok" : snap.health !== "ok" ? snap.health : "not ready: " + snap.ready);
    setData($("health"), "ok", healthy);
    setText($("version"), snap.version || "—");
    setText($("updated"), "updated " + clock(new Date(snapshotTime)));
    document.title = "gobetween · " + (c ? c.node_id : "standalone");

    memberIDs = c ? c.members.map((m) => m.id) : [];
    renderMembers(c);
    renderServers(snap.servers || []);
  }

  function renderMembers(c) {
    const table = $("members");
    $("not-clustered").hidden = !!c;
    table.hidden = !c;
    if (!c) {
      setText($("cluster-summary"), "");
      return;
    }
    const members = c.members.slice().sort((a, b) => a.id.localeCompare(b.id));
    const alive = members.filter((m) => m.gossip === "alive").length;
    const voters = members.filter((m) => m.raft === "leader" || m.raft === "voter").length;
    // A node without a [cluster] section has no gossip layer: one member,
    // itself, with gossip "none"; that is a single node, not a dead one.
    const single = !c.gossip && members.length <= 1;
    // A member that is not alive is worth the operator's eye on every node.
    setData($("cluster-summary"), "degraded", !single && alive < members.length);
    setText(
      $("cluster-summary"),
      single
        ? "single node · " + (c.leader_id ? "leader " + c.leader_id : "no leader")
        : members.length + " members · " + alive + " alive · " + voters + " voters · " + (c.leader_id ? "leader " + c.leader_id : "no leader"),
    );
    syncRows(table.tBodies[0], members, (m) => m.id, memberRow, (row, m) => updateMember(row, m, c));
  }

  function memberRow(m) {
    const row = el("tr", { "data-member": m.id });
    row.refs = {
      dot: el("span", { class: "dot" }),
      id: el("span", { class: "id" }),
      tags: el("span", { class: "tags" }),
      address: el("td", { class: "mono" }),
      raft: el("span", { class: "badge" }),
      gossip: el("span", { class: "gossip" }),
      report: el("td", { class: "num" }),
      seq: el("td", { class: "num" }),
      backends: el("td", { class: "num" }),
    };
    const r = row.refs;
    row.append(
      el("td", null, el("span", { class: "node-cell" }, r.dot, r.id, r.tags)),
      r.address,
      el("td", null, r.raft),
      el("td", null, r.gossip),
      r.report,
      r.seq,
      r.backends,
    );
    return row;
  }

  function updateMember(row, m, c) {
    const r = row.refs;
    let late = false;
    let report = "—";
    if (m.last_report) {
      const ms = snapshotTime - Date.parse(m.last_report);
      late = ms > REPORT_LATE_MS;
      report = age(ms);
    }
    let health;
    if (m.gossip === "none" && !c.gossip && m.id === c.node_id) {
      health = "ok"; // a single node: nothing to gossip with, nothing to report
    } else if (m.gossip !== "alive") {
      health = m.gossip === "suspect" ? "warn" : "bad";
    } else {
      health = late || !m.last_report ? "warn" : "ok";
    }
    setData(row, "health", health);
    setData(r.dot, "health", health);
    r.dot.title = m.gossip === "none" && health === "ok" ? "single node" : health === "ok" ? "alive and reporting" : health === "warn" ? "alive, report late or missing" : m.gossip;
    setText(r.id, m.id);
    const tags = [];
    if (m.id === c.node_id) tags.push("this node");
    setText(r.tags, tags.join(" "));
    setText(r.address, m.address || "—");
    setText(r.raft, m.raft);
    setData(r.raft, "role", m.raft);
    setText(r.gossip, m.gossip);
    setData(r.gossip, "state", m.gossip);
    setText(r.report, report);
    setData(r.report, "late", late);
    setText(r.seq, m.report_seq ? count(m.report_seq) : "—");
    setText(r.backends, m.report_backends != null ? count(m.report_backends) : "—");
  }

  // syncRows makes parent's children the rows of items, in order, creating,
  // updating and removing by key, so that a button under the pointer is not
  // replaced between press and release.
  function syncRows(parent, items, key, create, update) {
    const existing = new Map();
    for (const child of Array.from(parent.children)) existing.set(child.dataset.key, child);
    let prev = null;
    for (const item of items) {
      const k = key(item);
      let row = existing.get(k);
      if (row) existing.delete(k);
      else {
        row = create(item);
        row.dataset.key = k;
      }
      update(row, item);
      const want = prev ? prev.nextSibling : parent.firstChild;
      if (row !== want) parent.insertBefore(row, want);
      prev = row;
    }
    for (const row of existing.values()) row.remove();
  }

  function renderServers(servers) {
    $("no-servers").hidden = servers.length > 0;
    syncRows($("servers"), servers, (s) => s.name, serverCard, updateServer);

    let active = 0;
    let rx = 0;
    let tx = 0;
    let clusterRates = true;
    for (const s of servers) {
      for (const b of s.stats.backends || []) {
        active += (b.stats.cluster || {}).active_connections || 0;
        const r = rates(b);
        rx += r.rx;
        tx += r.tx;
        clusterRates = clusterRates && r.cluster;
      }
    }
    setText($("total-active"), count(active));
    setText($("total-rx"), bytesPerSecond(rx));
    setText($("total-tx"), bytesPerSecond(tx));
    $("total-rx").title = $("total-tx").title = clusterRates ? "all live nodes" : "this node only: the cluster's rates are not reported";
  }

  function serverCard(s) {
    const card = $("server-card").content.firstElementChild.cloneNode(true);
    card.dataset.server = s.name;
    const q = (sel) => card.querySelector(sel);
    card.refs = {
      name: q(".server-name"),
      chips: q(".chips"),
      totals: {},
      notice: q(".notice"),
      noticeText: q(".notice-text"),
      body: q("tbody"),
      table: q("table"),
      none: q(".no-backends"),
    };
    for (const td of card.querySelectorAll("tfoot [data-k]")) card.refs.totals[td.dataset.k] = td;
    q(".notice-close").addEventListener("click", () => (card.refs.notice.hidden = true));
    return card;
  }

  function updateServer(card, s) {
    const r = card.refs;
    card.server = s.name;
    setText(r.name, s.name);
    const backends = s.stats.backends || [];
    const policy = backends.length ? (backends[0].stats.cluster || {}).policy : "";
    const chips = [
      ["bind", s.stats.bind || s.bind],
      ["protocol", s.protocol],
      ["balance", s.balance],
      ["discovery", s.discovery],
      // The verdict policy means something only with a health check.
      ["healthcheck", s.healthcheck ? s.healthcheck + (policy && s.healthcheck !== "none" ? " · " + policy : "") : ""],
      ["origin", s.origin ? s.origin + (s.revision ? " @" + s.revision : "") : ""],
    ].filter((c) => c[1]);
    syncRows(
      r.chips,
      chips,
      (c) => c[0],
      (c) => el("li", null, el("span", { class: "k", text: c[0] }), el("span", { class: "v" })),
      (li, c) => setText(li.lastChild, c[1]),
    );

    let healthy = 0;
    let parked = 0;
    let local = 0;
    let active = 0;
    let rx = 0;
    let tx = 0;
    for (const b of backends) {
      const c = b.stats.cluster || {};
      if (c.healthy) healthy++;
      if (b.state) parked++;
      local += b.stats.active_connections || 0;
      active += c.active_connections || 0;
      const rr = rates(b);
      rx += rr.rx;
      tx += rr.tx;
    }
    setText(r.totals.healthy, healthy + " / " + backends.length + " healthy");
    setData(r.totals.healthy, "ok", healthy === backends.length);
    setText(r.totals.parked, parked ? parked + " out of rotation" : "");
    setText(r.totals.local, count(local));
    setText(r.totals.active, count(active));
    setText(r.totals.rx, bytesPerSecond(rx));
    setText(r.totals.tx, bytesPerSecond(tx));
    setText(r.totals.total, count(s.stats.total_connections));

    r.none.hidden = backends.length > 0;
    r.table.hidden = backends.length === 0;
    const sorted = backends.slice().sort((a, b) => address(a).localeCompare(address(b), undefined, { numeric: true }));
    syncRows(r.body, sorted, address, (b) => backendRow(card, b), updateBackend);
  }

  function backendRow(card, b) {
    const row = el("tr", { "data-backend": address(b) });
    row.refs = {
      addr: el("span", { class: "mono addr" }),
      meta: el("span", { class: "meta" }),
      state: el("span", { class: "badge", "data-col": "state" }),
      verdict: el("span", { class: "badge", "data-col": "verdict" }),
      nodes: el("span", { class: "nodes" }),
      local: el("td", { class: "num", "data-col": "local-active" }),
      cluster: el("td", { class: "num", "data-col": "cluster-active" }),
      rx: el("td", { class: "num" }),
      tx: el("td", { class: "num" }),
      total: el("td", { class: "num" }),
      buttons: {},
    };
    const r = row.refs;
    const actions = el("td", { class: "actions" });
    for (const a of ACTIONS) {
      const btn = el("button", { type: "button", class: "btn btn-" + a, text: a, "data-action": a });
      btn.addEventListener("click", () => act(card, row, a));
      r.buttons[a] = btn;
      actions.append(btn);
    }
    row.append(
      el("td", { class: "backend-cell" }, r.addr, r.meta),
      el("td", null, r.state),
      el("td", null, r.verdict),
      el("td", null, r.nodes),
      r.local,
      r.cluster,
      r.rx,
      r.tx,
      r.total,
      actions,
    );
    return row;
  }

  function updateBackend(row, b) {
    const r = row.refs;
    const s = b.stats;
    const c = s.cluster || {};
    const state = b.state || "enabled";
    row.backend = address(b);
    setData(row, "state", state);
    setData(row, "healthy", !!c.healthy);
    setText(r.addr, address(b));
    const meta = [];
    if (b.weight != null) meta.push("w" + b.weight);
    if (b.priority != null) meta.push("p" + b.priority);
    if (b.max_connections) meta.push("max " + b.max_connections);
    if (b.sni) meta.push("sni " + b.sni);
    setText(r.meta, meta.join(" · "));

    setText(r.state, state === "drain" ? "draining" : state === "disable" ? "disabled" : "enabled");
    setData(r.state, "state", state);
    // The node applies an override a moment after the log has it.
    r.state.title = (s.state || "") !== (b.state || "") ? "this node is still applying it" : "";

    setText(r.verdict, c.healthy ? "healthy" : "unhealthy");
    setData(r.verdict, "ok", !!c.healthy);
    r.verdict.title = "policy: " + (c.policy || "—") + (s.live !== !!c.healthy ? " · this node routes: " + (s.live ? "live" : "down") : "");

    // Every member gets a dot: one without a verdict (down, or not checking
    // yet) shows as such rather than vanishing.
    const verdicts = c.nodes || {};
    const nodes = Array.from(new Set([...memberIDs, ...Object.keys(verdicts)])).sort();
    syncRows(
      r.nodes,
      nodes,
      (id) => id,
      (id) => el("span", { class: "node" }, el("span", { class: "dot" }), el("span", { class: "node-id", text: id })),
      (chip, id) => {
        const v = verdicts[id];
        setData(chip, "ok", v === undefined ? "none" : v);
        setData(chip.firstChild, "health", v === undefined ? "none" : v ? "ok" : "bad");
        chip.title = id + ": " + (v === undefined ? "no verdict reported" : v ? "healthy" : "unhealthy");
      },
    );

    setText(r.local, count(s.active_connections));
    setText(r.cluster, count(c.active_connections));
    const rr = rates(b);
    setText(r.rx, bytesPerSecond(rr.rx));
    setText(r.tx, bytesPerSecond(rr.tx));
    r.rx.title = r.tx.title = rr.cluster ? "all live nodes" : "this node only";
    setData(r.rx, "zero", !rr.rx);
    setData(r.tx, "zero", !rr.tx);
    setText(r.total, count(s.total_connections));

    const current = b.state || "enable";
    for (const a of ACTIONS) {
      r.buttons[a].disabled = row.pending || a === current;
    }
  }

  // ---- actions ----

  async function act(card, row, action) {
    const server = card.server;
    const backend = row.backend;
    row.pending = true;
    for (const btn of Object.values(row.refs.buttons)) btn.disabled = true;
    row.refs.buttons[action].classList.add("busy");
    const path = "/servers/" + encodeURIComponent(server) + "/backends/" + encodeURIComponent(backend) + "/" + action;
    let ok = false;
    let text;
    try {
      // The origin, not the page's URL: a page opened as http://user:pass@host/
      // would lend fetch its credentials, which fetch refuses.
      const resp = await fetch(new URL(path, location.origin), { method: "POST", credentials: "same-origin" });
      let body = null;
      try {
        body = await resp.json();
      } catch (_) {
        // not JSON: a proxy in front answered
      }
      ok = resp.ok;
      if (ok) text = action + " " + backend + ": committed at revision " + (body && body.revision != null ? body.revision : "?");
      else text = action + " " + backend + " failed: " + resp.status + " " + (body && body.error ? body.error : resp.statusText);
    } catch (err) {
      text = action + " " + backend + " failed: " + err.message;
    }
    row.pending = false;
    row.refs.buttons[action].classList.remove("busy");
    // Re-enable at once; the next snapshot shows the new state.
    const current = row.dataset.state === "enabled" ? "enable" : row.dataset.state;
    for (const a of ACTIONS) row.refs.buttons[a].disabled = a === current;
    notify(card, ok, text);
  }

  function notify(card, ok, text) {
    const r = card.refs;
    setData(r.notice, "ok", ok);
    setText(r.noticeText, text);
    r.notice.hidden = false;
    clearTimeout(card.noticeTimer);
    if (ok) card.noticeTimer = setTimeout(() => (r.notice.hidden = true), 6000);
  }

  connect();
})();
