// CloudiSENSE Assist dashboard: log in, chat with the assistant, approve risky steps, watch the node.
// Speaks the same protocol as every other client (docs/protocol.md); no build step, no framework.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { ws: null, pending: new Map(), tokens: null, user: null, refreshTimer: null, streaming: null };

async function sha256Hex(text) {
  const bytes = new TextEncoder().encode(text);
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

// -- auth ------------------------------------------------------------------

async function login(username, password) {
  const body = new URLSearchParams({ username, password: await sha256Hex(password) });
  const resp = await fetch("/authorize", { method: "POST", body });
  const json = await resp.json().catch(() => ({}));
  if (!resp.ok || json.status !== "success") throw new Error(json.message || `login failed (${resp.status})`);
  return json.data;
}

async function refreshAccess() {
  const body = new URLSearchParams({ refresh: state.tokens.refresh.token });
  const resp = await fetch("/refresh", { method: "POST", body });
  const json = await resp.json().catch(() => ({}));
  if (!resp.ok) { logout("Session expired: please log in again."); return; }
  state.tokens.access = json.data.access;
  sessionStorage.setItem("cs.tokens", JSON.stringify(state.tokens));
  scheduleRefresh();
}

function scheduleRefresh() {
  clearTimeout(state.refreshTimer);
  const wait = Math.max(5000, state.tokens.access.expires - Date.now() - 60000);
  state.refreshTimer = setTimeout(refreshAccess, wait);
}

function logout(message = "") {
  sessionStorage.removeItem("cs.tokens");
  if (state.ws) state.ws.close();
  state.ws = null; state.tokens = null;
  $("app-view").hidden = true; $("login-view").hidden = false;
  $("login-error").textContent = message;
}

// -- RPC -------------------------------------------------------------------

function rpc(intent, params = {}) {
  return new Promise((resolve, reject) => {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) { reject(new Error("not connected")); return; }
    const requestid = crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2);
    state.pending.set(requestid, { resolve, reject });
    state.ws.send(JSON.stringify({ type: "rpc", requestid, intent, params }));
  });
}

function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/ws?token=${encodeURIComponent(state.tokens.access.token)}`);
  state.ws = ws;
  ws.onopen = () => { setConn(true); afterConnect(); };
  ws.onclose = () => {
    setConn(false);
    for (const { reject } of state.pending.values()) reject(new Error("connection closed"));
    state.pending.clear();
    if (state.tokens && state.ws === ws) setTimeout(connect, 2000);
  };
  ws.onmessage = (frame) => {
    let payload;
    try { payload = JSON.parse(frame.data); } catch { return; }
    for (const msg of Array.isArray(payload) ? payload : [payload]) {
      if (msg.type === "event") onEvent(msg);
      else if (msg.type === "rpc_response") {
        const waiter = state.pending.get(msg.requestid);
        if (!waiter) continue;
        state.pending.delete(msg.requestid);
        if (msg.status === "success") waiter.resolve(msg);
        else waiter.reject(Object.assign(new Error(msg.message), { code: msg.code }));
      }
    }
  };
}

function setConn(on) {
  $("conn-state").textContent = on ? "connected" : "reconnecting";
  $("conn-state").className = on ? "pill on" : "pill warn";
}

async function afterConnect() {
  for (const topic of ["/stats", "/targets", "/notification"]) rpc("subscribe_channel", { topic }).catch(() => {});
  refreshApprovals(); refreshTargets(); refreshAudit();
  if (!$("messages").childElementCount) {
    rpc("assist_introduction").then((r) => addMessage("assistant", r.data.text || r.data.answer || "Hello."))
      .catch(() => addMessage("system", "The assistant is not available on this node."));
  }
}

// -- events ----------------------------------------------------------------

// Live events use the existing CloudiSENSE client's names (data_generated, text_notification, ...);
// our precise name, when there is one, is in meta.event (docs/protocol.md).
function onEvent(ev) {
  const data = ev.data || {};
  switch (ev.name) {
    case "data_generated": if (ev.topic === "/stats") showStats(data.system || {}); break;
    case "target_state": refreshTargets(); break;
    case "assist_delta": case "llm_delta":
      if (state.streaming) { state.streaming.textContent += data.text || data.delta || ""; scrollChat(); }
      break;
    case "approval_required": showApproval(data); refreshApprovals(); break;
    case "assist_step": case "chain_step":
      if (state.streaming && data.intent) {
        state.streaming.dataset.steps = (state.streaming.dataset.steps || "") + `${data.intent} `;
      }
      break;
    case "text_notification":
      if (ev.topic === "/notification") addMessage("system", `Notification: ${data.message || "(no text)"}`);
      break;
    default: break;
  }
}

function showStats(s) {
  const pct = (v) => (typeof v === "number" ? `${v.toFixed(1)} %` : "–");
  const disks = Array.isArray(s.disk) ? s.disk : [];
  const root = disks.find((d) => d.mountpoint === "/") || disks[0];
  const load = s.os && Array.isArray(s.os.average_load) ? s.os.average_load : null;
  $("stat-cpu").textContent = pct(s.cpu && s.cpu.percent);
  $("stat-mem").textContent = pct(s.memory && s.memory.percent);
  $("stat-disk").textContent = pct(root && root.percent);
  $("stat-load").textContent = load ? load.map((x) => Number(x).toFixed(2)).join(" ") : "–";
}

// -- chat ------------------------------------------------------------------

function scrollChat() { const m = $("messages"); m.scrollTop = m.scrollHeight; }

function addMessage(kind, text) {
  const node = el("div", { class: `msg ${kind}` }, text);
  $("messages").append(node);
  scrollChat();
  return node;
}

function renderAnswer(node, data) {
  node.textContent = data.answer || data.text || "(no answer)";
  const steps = data.steps || [];
  if (steps.length) {
    const list = el("div", { class: "steps" });
    for (const s of steps) {
      const status = s.status || (s.ok ? "success" : "error");
      list.append(el("div", {}, el("code", {}, s.intent), ` ${JSON.stringify(s.params || {})} → ${status}`));
    }
    node.append(list);
  }
  for (const a of data.approvals || []) showApproval(a);
}

async function ask(text) {
  addMessage("user", text);
  const answer = addMessage("assistant", "");
  answer.classList.add("pending");
  state.streaming = answer;
  $("chat-send").disabled = true;
  try {
    const resp = await rpc("query_assist", { query: text });
    renderAnswer(answer, resp.data);
  } catch (err) {
    answer.textContent = `Error: ${err.message}`;
    answer.classList.add("system");
  } finally {
    answer.classList.remove("pending");
    state.streaming = null;
    $("chat-send").disabled = false;
    refreshAudit(); refreshApprovals();
  }
}

// -- approvals ---------------------------------------------------------------

const shownApprovals = new Set();

function showApproval(a) {
  const id = a.approval_id || a.id;
  if (!id || shownApprovals.has(id)) return;
  shownApprovals.add(id);
  const box = addMessage("approval", `Approval needed: ${a.description || id}`);
  box.dataset.approvalId = id;
  const decide = (approve) => async () => {
    for (const b of box.querySelectorAll("button")) b.disabled = true;
    try {
      const resp = await rpc("confirm_action", { approval_id: id, approve });
      const d = resp.data || {};
      addMessage(approve ? "assistant" : "system", d.answer || d.message || (approve ? "Approved." : "Rejected: nothing was run."));
      if (d.result) renderAnswer(addMessage("assistant", ""), d.result);
    } catch (err) { addMessage("system", `Could not decide: ${err.message}`); }
    refreshApprovals(); refreshAudit();
  };
  box.append(el("div", { class: "actions" },
    el("button", { onclick: decide(true), "data-approve": id }, "Approve"),
    el("button", { class: "deny", onclick: decide(false), "data-reject": id }, "Reject")));
}

async function refreshApprovals() {
  try {
    const resp = await rpc("list_approvals");
    const items = (resp.data.approvals || []).filter((a) => (a.status || "pending") === "pending");
    $("approval-count").textContent = items.length;
    $("approval-count").className = items.length ? "pill warn" : "pill";
    const list = $("approvals");
    list.replaceChildren();
    if (!items.length) list.append(el("li", { class: "muted" }, "Nothing waits for you."));
    for (const a of items) list.append(el("li", {}, a.description || a.approval_id));
  } catch { /* the agent module may be absent */ }
}

async function refreshTargets() {
  try {
    const resp = await rpc("list_targets", { details: true });
    const list = $("targets");
    list.replaceChildren();
    for (const t of resp.data.targets || []) {
      list.append(el("li", {}, `${t.name} `, el("span", { class: `state-${t.state}` }, t.state)));
    }
  } catch { /* no targets module */ }
}

const UI_INTENTS = new Set(["list_approvals", "get_audit_log", "list_targets", "subscribe_channel",
  "unsubscribe_channel", "assist_introduction", "list_channels"]);

async function refreshAudit() {
  try {
    const resp = await rpc("get_audit_log", { limit: 40 });
    const list = $("audit");
    list.replaceChildren();
    // The dashboard's own housekeeping reads would drown what people and the assistant did.
    const records = (resp.data.records || []).filter((r) => !UI_INTENTS.has(r.intent));
    for (const r of records.slice(0, 8)) {
      const when = new Date(r.ts * 1000).toLocaleTimeString();
      list.append(el("li", {}, `${when} ${r.user} ${r.intent} → ${r.outcome}${r.rule ? ` (${r.rule})` : ""}`));
    }
  } catch { /* ignore */ }
}

// -- start -------------------------------------------------------------------

function enter(tokens, user) {
  state.tokens = tokens; state.user = user;
  sessionStorage.setItem("cs.tokens", JSON.stringify(tokens));
  sessionStorage.setItem("cs.user", user);
  $("login-view").hidden = true; $("app-view").hidden = false;
  $("who").textContent = user;
  fetch("/healthz").then((r) => r.json()).then((h) => { $("node-name").textContent = `node ${h.identity}`; }).catch(() => {});
  scheduleRefresh();
  connect();
  $("chat-input").focus();
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("login-error").textContent = "";
  $("login-submit").disabled = true;
  try {
    const user = $("login-user").value.trim();
    enter(await login(user, $("login-password").value), user);
  } catch (err) { $("login-error").textContent = err.message; }
  finally { $("login-submit").disabled = false; }
});

$("chat-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("chat-input").value.trim();
  if (!text) return;
  $("chat-input").value = "";
  ask(text);
});

$("chat-clear").addEventListener("click", async () => {
  try { await rpc("clear_assist_session"); } catch { /* ignore */ }
  $("messages").replaceChildren();
  addMessage("system", "Conversation cleared.");
});

$("logout").addEventListener("click", () => logout());

const saved = sessionStorage.getItem("cs.tokens");
if (saved) {
  const tokens = JSON.parse(saved);
  if (tokens.access.expires > Date.now()) enter(tokens, sessionStorage.getItem("cs.user") || "");
}
