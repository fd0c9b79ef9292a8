// D2's development scaffold of the dashboard core (DASH.md contract). D1's core.js replaces it at merge;
// beyond the contract it only adds setNode/currentNode (the node switcher) and login/logout for the dev page.

const state = {
  ws: null, tokens: null, pending: new Map(), handlers: new Map(), connectHandlers: new Set(),
  topics: new Set(), node: null, me: { user: "", role: "viewer" },
};

/** DOM builder: strings become text nodes (never HTML). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function emit(ev) {
  for (const key of [ev.name, "*"]) {
    for (const handler of state.handlers.get(key) || []) {
      try { handler(ev); } catch (err) { console.warn("event handler failed", err); }
    }
  }
}

/** Send one RPC; resolves with the whole rpc_response, rejects with Error(message) carrying .code. */
export function rpc(intent, params = {}) {
  return send(intent, params, state.node);
}

// Subscriptions are always this node's: another node's topics are followed here as /<identity>/<topic>.
function send(intent, params, node) {
  return new Promise((resolve, reject) => {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
      reject(Object.assign(new Error("not connected to the node: wait a moment or reload"), { code: 0 }));
      return;
    }
    const requestid = crypto.randomUUID();
    state.pending.set(requestid, { resolve, reject });
    const frame = { type: "rpc", requestid, intent, params };
    if (node) frame.serviceId = node;
    state.ws.send(JSON.stringify(frame));
  });
}

export async function subscribe(topic) {
  state.topics.add(topic);
  return send("subscribe_channel", { topic }, null);
}

export async function unsubscribe(topic) {
  state.topics.delete(topic);
  return send("unsubscribe_channel", { topic }, null);
}

/** Handle events by name ("*": all); returns the function that stops handling. */
export function on(name, handler) {
  if (!state.handlers.has(name)) state.handlers.set(name, new Set());
  state.handlers.get(name).add(handler);
  return () => state.handlers.get(name).delete(handler);
}

export function onConnect(handler) {
  state.connectHandlers.add(handler);
  if (state.ws && state.ws.readyState === WebSocket.OPEN) handler();
}

export function me() { return { ...state.me }; }
export function canAct() { return state.me.role !== "viewer"; }

/** Scaffold only: text, no markdown (D1's core renders marked + DOMPurify). */
export function md(text) {
  const frag = document.createDocumentFragment();
  frag.append(document.createTextNode(String(text ?? "")));
  return frag;
}

const num = (v, digits = 1) => (typeof v === "number" && Number.isFinite(v) ? v.toFixed(digits) : null);

export const fmt = {
  pct(v) { const n = num(v); return n === null ? "–" : `${n} %`; },
  bytes(n) {
    if (typeof n !== "number" || !Number.isFinite(n)) return "–";
    const units = ["B", "KB", "MB", "GB", "TB", "PB"];
    let i = 0;
    while (Math.abs(n) >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
    return `${i ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
  },
  rate(bps) { return fmt.bytes(bps) === "–" ? "–" : `${fmt.bytes(bps)}/s`; },
  duration(seconds) {
    if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds < 0) return "–";
    const s = Math.floor(seconds);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  },
  time(ts) {
    if (typeof ts !== "number" || !ts) return "–";
    const d = new Date(ts * 1000);
    const today = new Date().toDateString() === d.toDateString();
    return today ? d.toLocaleTimeString() : d.toLocaleString();
  },
  ago(ts) {
    if (typeof ts !== "number" || !ts) return "–";
    const s = Math.max(0, Date.now() / 1000 - ts);
    return s < 5 ? "just now" : `${fmt.duration(s)} ago`;
  },
};

export function toast(text, kind = "info") {
  let box = document.getElementById("toasts");
  if (!box) {
    box = el("div", { id: "toasts", class: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(box);
  }
  const note = el("div", { class: `toast toast-${kind}` }, text);
  box.append(note);
  setTimeout(() => note.remove(), 6000);
}

export async function confirmAction(approvalId, approve, reason) {
  const params = { approval_id: approvalId, approve };
  if (reason) params.reason = reason;
  try {
    return await rpc("confirm_action", params);
  } finally {
    emit({ type: "event", name: "approval_changed", topic: "", data: { approval_id: approvalId }, meta: {} });
  }
}

/** Scaffold: hands a question to the chat (D1's chat listens for "ask_assistant"). */
export function askAssistant(text) {
  emit({ type: "event", name: "ask_assistant", topic: "", data: { text }, meta: {} });
}

// -- beyond the contract: the node switcher's choice, carried by every rpc as serviceId ------------

export function setNode(identity) {
  state.node = identity || null;
  emit({ type: "event", name: "node_changed", topic: "", data: { node: state.node }, meta: {} });
}
export function currentNode() { return state.node; }

// -- dev page: log in and connect ---------------------------------------------------------------------

async function sha256Hex(text) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function decodeClaims(token) {
  const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  return JSON.parse(atob(part + "===".slice((part.length + 3) % 4)));
}

export async function login(username, password) {
  const body = new URLSearchParams({ username, password: await sha256Hex(password) });
  const resp = await fetch("/authorize", { method: "POST", body });
  const json = await resp.json().catch(() => ({}));
  if (!resp.ok || json.status !== "success") throw new Error(json.message || `login failed (${resp.status})`);
  state.tokens = json.data;
  const claims = decodeClaims(state.tokens.access.token);
  state.me = { user: claims.sub, role: claims.role };
  connect();
}

function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/ws?token=${encodeURIComponent(state.tokens.access.token)}`);
  state.ws = ws;
  ws.onopen = () => {
    document.body.dataset.connected = "yes";
    for (const topic of state.topics) send("subscribe_channel", { topic }, null).catch(() => {});
    for (const handler of state.connectHandlers) handler();
  };
  ws.onclose = () => {
    document.body.dataset.connected = "no";
    for (const { reject } of state.pending.values()) reject(Object.assign(new Error("connection closed"), { code: 0 }));
    state.pending.clear();
    if (state.ws === ws) setTimeout(connect, 2000);
  };
  ws.onmessage = (frame) => {
    let payload;
    try { payload = JSON.parse(frame.data); } catch { return; }
    for (const msg of Array.isArray(payload) ? payload : [payload]) {
      if (msg.type === "event") emit(msg);
      else if (msg.type === "rpc_response") {
        const waiter = state.pending.get(msg.requestid);
        if (!waiter) continue;
        state.pending.delete(msg.requestid);
        if (msg.status === "success") waiter.resolve(msg);
        else waiter.reject(Object.assign(new Error(msg.message || "request failed"), { code: msg.code }));
      }
    }
  };
}
