// The dashboard's core: the one connection to the node, the event bus, safe DOM building and
// markdown, formatting, notices and approval decisions. Panels and the chat use only this module
// to talk to the server (the contract is in docs/dashboard.md). Nothing here uses innerHTML on
// text from the server: log lines, model replies and alerts are data.

import { Marked } from "../vendor/marked/marked.esm.js";
import DOMPurify from "../vendor/dompurify/purify.es.js";

const TOKENS_KEY = "cs.tokens";
const listeners = new Map(); // event name ("*" for all) -> Set of handlers
const connectHandlers = new Set();
const subscriptions = new Set();
const waiting = new Map(); // requestid -> {resolve, reject}
const state = { ws: null, tokens: null, identity: null, node: null, refreshTimer: null, retry: 0,
  connected: false, assistant: null };

// -- DOM -------------------------------------------------------------------------------

/** Build an element: strings become text nodes (never markup); `on<event>` attrs add listeners. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "style") throw new Error("el(): inline styles are refused by the page's CSP; use a class");
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Links from a model open in a new tab without access to this page.
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("rel", "noopener noreferrer");
    node.setAttribute("target", "_blank");
  }
});

const PURIFY = {
  RETURN_DOM_FRAGMENT: true,
  FORBID_TAGS: ["style", "iframe", "img", "svg", "math", "form", "input", "button", "textarea", "select",
    "video", "audio", "source", "object", "embed", "link", "meta", "base"],
  FORBID_ATTR: ["style", "srcset", "action", "formaction"],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:|#)/i,
};

const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// Raw HTML inside markdown is shown as the characters it is, and images as their alt text: the
// browser never parses a model's (or a log line's) markup, not even in the sanitizer's inert
// document (where <img onerror> would still be loaded and trip the page's CSP).
const markdown = new Marked({
  async: false, gfm: true, breaks: true,
  renderer: {
    html: (token) => escapeHtml(token.text),
    image: (token) => escapeHtml(token.text ? `[image: ${token.text}]` : "[image]"),
  },
});

/** Markdown (from a model, say) as a sanitized DocumentFragment: no script, handlers, styles or images. */
export function md(text) {
  return DOMPurify.sanitize(markdown.parse(String(text ?? "")), PURIFY);
}

// -- formatting --------------------------------------------------------------------------

const num = (v, digits = 1) => Number(v).toLocaleString(undefined, { maximumFractionDigits: digits,
  minimumFractionDigits: digits });

function scaled(n, units, step) {
  if (typeof n !== "number" || !Number.isFinite(n)) return "–";
  let i = 0;
  let v = Math.abs(n);
  while (v >= step && i < units.length - 1) { v /= step; i += 1; }
  return `${n < 0 ? "-" : ""}${num(v, i === 0 ? 0 : 1)} ${units[i]}`;
}

/** Numbers as a person reads them. */
export const fmt = {
  pct: (v) => (typeof v === "number" && Number.isFinite(v) ? `${num(v)} %` : "–"),
  bytes: (n) => scaled(n, ["B", "kB", "MB", "GB", "TB", "PB"], 1000),
  rate: (n) => (typeof n === "number" ? `${scaled(n, ["B", "kB", "MB", "GB", "TB"], 1000)}/s` : "–"),
  duration(seconds) {
    if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds < 0) return "–";
    const s = Math.floor(seconds);
    if (s < 60) return `${s} s`;
    const [d, h, m] = [Math.floor(s / 86400), Math.floor((s % 86400) / 3600), Math.floor((s % 3600) / 60)];
    if (d) return `${d} d ${h} h`;
    if (h) return `${h} h ${m} min`;
    return `${m} min${s % 60 ? ` ${s % 60} s` : ""}`;
  },
  time(ts) {
    if (typeof ts !== "number" || !Number.isFinite(ts)) return "–";
    const when = new Date(ts * 1000);
    const sameDay = when.toDateString() === new Date().toDateString();
    return sameDay ? when.toLocaleTimeString() : when.toLocaleString();
  },
  ago(ts) {
    if (typeof ts !== "number" || !Number.isFinite(ts)) return "–";
    const s = Date.now() / 1000 - ts;
    return s < 5 ? "just now" : `${fmt.duration(s)} ago`;
  },
};

/** A <time> element for an epoch-seconds timestamp (local time, the exact date in its title). */
export function timeEl(ts, cls = "ts") {
  return el("time", { class: cls, datetime: new Date(ts * 1000).toISOString(), title: new Date(ts * 1000).toLocaleString() },
    fmt.time(ts));
}

// -- notices -----------------------------------------------------------------------------

/** A short-lived notice outside the chat (kind: info | ok | warn | error). */
export function toast(text, kind = "info") {
  let box = document.getElementById("toasts");
  if (!box) {
    box = el("div", { id: "toasts", class: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(box);
  }
  const note = el("div", { class: `toast ${kind}` }, text);
  box.append(note);
  setTimeout(() => note.remove(), kind === "error" ? 8000 : 4000);
}

// -- events ------------------------------------------------------------------------------

/** Listen to events named `name` ("*" for all); returns the function that stops listening. */
export function on(name, handler) {
  if (!listeners.has(name)) listeners.set(name, new Set());
  listeners.get(name).add(handler);
  return () => listeners.get(name)?.delete(handler);
}

/** Deliver an event frame to its listeners (also used for the dashboard's own local events). */
export function emit(ev) {
  for (const key of [ev.name, "*"]) {
    for (const handler of [...(listeners.get(key) || [])]) {
      try { handler(ev); } catch (err) { console.warn(`a handler of ${ev.name} failed:`, err); }
    }
  }
}

const local = (name, data = {}) => emit({ type: "event", name, topic: "", data, meta: { local: true } });

/** Called after every (re)connect, and at once if connected now. */
export function onConnect(handler) {
  connectHandlers.add(handler);
  if (state.connected) handler();
  return () => connectHandlers.delete(handler);
}

// -- identity ----------------------------------------------------------------------------

function claims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch { return {}; }
}

/** Who is logged in: {user, role} from the access token. */
export function me() {
  if (!state.tokens) return { user: "", role: "viewer" };
  const c = claims(state.tokens.access.token);
  return { user: c.sub || "", role: c.role || "viewer" };
}

/** Whether this user may act (a viewer sees no action buttons at all). */
export const canAct = () => me().role !== "viewer";

/** The node's identity (from /healthz), once known. */
export const identity = () => state.identity;

/** The federation node calls go to (null: this node). */
export const currentNode = () => state.node;
export function setNode(node) {
  state.node = node && node !== state.identity ? node : null;
  local("node_changed", { node: state.node });
}

// -- RPC ---------------------------------------------------------------------------------

const newId = () => (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`);

/** Call an intent; resolves with the whole rpc_response (`resp.data`), rejects with Error(message) + `.code`.
 *  `options.node` sends it to a federation node (default: the chosen one, see setNode). */
export function rpc(intent, params = {}, options = {}) {
  return new Promise((resolve, reject) => {
    const ws = state.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      reject(Object.assign(new Error("Not connected to the node: wait for it to reconnect."), { code: 0 }));
      return;
    }
    const requestid = newId();
    const frame = { type: "rpc", requestid, intent, params };
    const node = "node" in options ? options.node : state.node;
    if (node) frame.serviceId = node;
    waiting.set(requestid, { resolve, reject });
    ws.send(JSON.stringify(frame));
  });
}

/** Subscribe to a topic (remembered: made again after a reconnect). */
export async function subscribe(topic) {
  subscriptions.add(topic);
  return rpc("subscribe_channel", { topic }, { node: null });
}

export async function unsubscribe(topic) {
  subscriptions.delete(topic);
  if (!state.connected) return null;
  return rpc("unsubscribe_channel", { topic }, { node: null });
}

function onFrame(frame) {
  let payload;
  try { payload = JSON.parse(frame.data); } catch { return; }
  for (const msg of Array.isArray(payload) ? payload : [payload]) {
    if (msg && msg.type === "event") emit(msg);
    else if (msg && msg.type === "rpc_response") {
      const waiter = waiting.get(msg.requestid);
      if (!waiter) continue;
      waiting.delete(msg.requestid);
      if (msg.status === "success") waiter.resolve(msg);
      else waiter.reject(Object.assign(new Error(msg.message || `request failed (${msg.code})`), { code: msg.code }));
    }
  }
}

// -- connection and tokens ---------------------------------------------------------------

async function sha256Hex(text) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function postForm(path, fields) {
  const resp = await fetch(path, { method: "POST", body: new URLSearchParams(fields) });
  const json = await resp.json().catch(() => ({}));
  if (!resp.ok || json.status !== "success") {
    throw Object.assign(new Error(json.message || `${path} failed (HTTP ${resp.status})`), { code: resp.status });
  }
  return json.data;
}

/** Log in (the password goes as its SHA-256, as the protocol says) and connect. */
export async function login(user, password) {
  const tokens = await postForm("/authorize", { username: user, password: await sha256Hex(password) });
  start(tokens);
}

/** Resume the tab's session if its tokens are still good; true when it did. */
export function resume() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(TOKENS_KEY) || "null");
    if (saved && saved.refresh && saved.refresh.expires > Date.now()) { start(saved); return true; }
  } catch { /* a damaged entry: log in again */ }
  sessionStorage.removeItem(TOKENS_KEY);
  return false;
}

function start(tokens) {
  state.tokens = tokens;
  sessionStorage.setItem(TOKENS_KEY, JSON.stringify(tokens));
  fetch("/healthz").then((r) => r.json()).then((h) => { state.identity = h.identity || null; local("identity", h); })
    .catch(() => {});
  local("login", me());
  // A resumed tab's access token may have expired: trade the refresh token first, so the
  // handshake is not refused.
  if (tokens.access.expires < Date.now() + 5000) refreshAccess().catch(() => {}).finally(connect);
  else { scheduleRefresh(); connect(); }
}

/** Forget the tokens, close the connection; `message` is shown on the login form. */
export function logout(message = "") {
  clearTimeout(state.refreshTimer);
  sessionStorage.removeItem(TOKENS_KEY);
  state.tokens = null;
  const ws = state.ws;
  state.ws = null;
  if (ws) ws.close();
  subscriptions.clear();
  local("logout", { message });
}

function scheduleRefresh() {
  clearTimeout(state.refreshTimer);
  const wait = Math.max(5000, state.tokens.access.expires - Date.now() - 60000);
  state.refreshTimer = setTimeout(() => refreshAccess().catch(() => {}), wait);
}

async function refreshAccess() {
  if (!state.tokens) return;
  try {
    const data = await postForm("/refresh", { refresh: state.tokens.refresh.token });
    state.tokens = { ...state.tokens, ...data };
    sessionStorage.setItem(TOKENS_KEY, JSON.stringify(state.tokens));
    scheduleRefresh();
  } catch (err) {
    if (err.code === 401 || err.code === 400) logout("Your session has expired: please log in again.");
    else throw err;
  }
}

function setConnected(connected) {
  state.connected = connected;
  local("connection", { connected });
}

function connect() {
  if (!state.tokens) return;
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/ws?token=${encodeURIComponent(state.tokens.access.token)}`);
  state.ws = ws;
  let opened = false;
  ws.onopen = () => {
    opened = true;
    state.retry = 0;
    setConnected(true);
    for (const topic of subscriptions) rpc("subscribe_channel", { topic }, { node: null }).catch(() => {});
    for (const handler of [...connectHandlers]) {
      try { handler(); } catch (err) { console.warn("a connect handler failed:", err); }
    }
  };
  ws.onmessage = onFrame;
  ws.onclose = async () => {
    if (state.ws !== ws) return; // logged out or replaced
    if (opened) setConnected(false);
    for (const { reject } of waiting.values()) {
      reject(Object.assign(new Error("The connection to the node was lost; try again when it is back."), { code: 0 }));
    }
    waiting.clear();
    // Refused at the handshake or dropped: the access token may have expired meanwhile.
    if (!opened || state.tokens.access.expires < Date.now() + 5000) {
      try { await refreshAccess(); } catch { /* the node is down: retry below */ }
    }
    if (!state.tokens) return;
    state.retry = Math.min(state.retry + 1, 6);
    setTimeout(connect, Math.min(1000 * 2 ** (state.retry - 1), 15000));
  };
}

/** Whether the connection is open now. */
export const isConnected = () => state.connected;

// -- approvals and the assistant -------------------------------------------------------

/** Decide an approval (the approvals panel and the chat's cards both use this); emits approval_changed. */
export async function confirmAction(approvalId, approve, reason) {
  const params = { approval_id: approvalId, approve: Boolean(approve) };
  if (reason && String(reason).trim()) params.reason = String(reason).trim().slice(0, 500);
  try {
    const resp = await rpc("confirm_action", params, { node: null });
    local("approval_changed", { approval_id: approvalId, approve: Boolean(approve), response: resp.data });
    return resp;
  } catch (err) {
    local("approval_changed", { approval_id: approvalId, approve: Boolean(approve), error: err.message });
    throw err;
  }
}

/** The chat registers how it takes a question; panels call askAssistant(text). */
export function setAssistant(handler) { state.assistant = handler; }

/** Hand a question to the chat (e.g. an alert's "Investigate"). */
export function askAssistant(text) {
  if (state.assistant) state.assistant(String(text));
  else toast("The assistant is not available on this page.", "warn");
}
