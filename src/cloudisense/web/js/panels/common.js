// Small helpers the panels share: one place for "not on this node", acting through the policy,
// debounced refreshes and the local "something was done" signal that refreshes the audit log.
import { currentNode, el, fmt, on, onConnect, rpc, subscribe, toast, unsubscribe } from "../core.js";

/** Whether an RPC error means the intent does not exist on this node (its module is not loaded). */
export function isUnknownIntent(err) {
  return err && err.code === 404 && /unknown intent/i.test(err.message || "");
}

/** A muted one-line note inside a panel (replaces its children). */
export function note(box, text, kind = "muted") {
  box.replaceChildren(el("p", { class: `panel-note ${kind}` }, text));
}

/** ``fn`` called at most once per ``ms`` burst (events come in bursts: one refresh per burst). */
export function debounce(fn, ms = 250) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** Tell the other panels (the audit log) that this person just did something. */
export function acted() {
  document.dispatchEvent(new CustomEvent("cs-acted"));
}

export function onActed(handler) {
  document.addEventListener("cs-acted", handler);
}

/** A time element: local time as text, the full date in its title, machine-readable datetime. */
export function when(ts) {
  if (typeof ts !== "number" || !ts) return el("span", { class: "muted" }, "–");
  const d = new Date(ts * 1000);
  return el("time", { datetime: d.toISOString(), title: d.toLocaleString() }, fmt.time(ts));
}

/** ``{name: "web", lines: 20}`` as ``name=web, lines=20``: params in words, never raw JSON. */
export function paramsText(params) {
  if (!params || typeof params !== "object") return "";
  return Object.entries(params)
    .map(([k, v]) => `${k}=${v !== null && typeof v === "object" ? summarize(v) : String(v)}`)
    .join(", ");
}

function summarize(v) {
  if (Array.isArray(v)) return `[${v.length} item${v.length === 1 ? "" : "s"}]`;
  return `{${Object.keys(v).join(", ")}}`;
}

/**
 * Run one intent as the assistant would (``agent_execute``), so the node's policy and approvals
 * apply exactly as they do to the chat: allowed → it runs; confirm → an approval waits; deny → the
 * policy's reason. Resolves with ``{kind: "done" | "approval" | "refused" | "failed", text, approval}``.
 */
export async function actThroughPolicy(intent, params, session) {
  const resp = await rpc("agent_execute", { steps: [{ intent, params }], session });
  const data = resp.data || {};
  // A direct call gated by the policy answers 202 approval_required: the same outcome.
  if (resp.code === 202 && data.approval_required) {
    return { kind: "approval", text: `Waiting for approval: ${data.description}`, approval: data };
  }
  const approval = data.approval;
  if (data.outcome === "awaiting_approval" && approval) {
    return { kind: "approval", text: `Waiting for approval: ${approval.description}`, approval };
  }
  const step = (data.steps || [])[0];
  if (step && step.status === "ok") return { kind: "done", text: data.answer || `${intent} done` };
  if (step && step.status === "denied") return { kind: "refused", text: step.message || data.answer || "refused" };
  return { kind: "failed", text: (step && step.message) || data.answer || `${intent} failed` };
}

/** Show the outcome of :func:`actThroughPolicy` as a toast (approvals also show in their panel). */
export function tellOutcome(outcome) {
  const kinds = { done: "success", approval: "warning", refused: "error", failed: "error" };
  toast(outcome.text, kinds[outcome.kind] || "info");
}

/** A session id for a panel's own actions, apart from the chat's conversation. */
export function panelSession(user, panel) {
  const safe = String(user || "user").replace(/[^A-Za-z0-9_.:-]/g, "_").slice(0, 40);
  return `${panel}.${safe}`;
}

/** ``topic`` of the node the switcher chose: another node's topics are ``/<identity>/<topic>`` here. */
export function topicOf(topic) {
  const node = currentNode();
  return node ? `/${node}${topic}` : topic;
}

/**
 * Follow ``topic`` of the chosen node: subscribed on every (re)connect and again, namespaced, when the
 * node switcher changes node. Returns ``is(ev)``: whether an event is on that topic now.
 */
export function follow(topic, onError = () => {}) {
  let current = null;
  const change = async () => {
    const next = topicOf(topic);
    if (current && current !== next) await unsubscribe(current).catch(() => {});
    current = next;
    await subscribe(next).catch(onError);
  };
  onConnect(change);
  on("node_changed", change);
  return (ev) => ev.topic === current;
}
