// The assistant chat: questions, answers that stream in (plan steps with live status, then the
// answer's text, then the whole turn with results), diagnoses with evidence and confidence,
// approval cards kept in view while they wait, and the conversation resumed after a reload.
// Everything the server sends is shown as text (or sanitized markdown for a model's reply).

import { canAct, confirmAction, el, fmt, identity, md, me, on, onConnect, rpc, setAssistant, subscribe, timeEl,
  toast } from "./core.js";

const ui = { log: null, dock: null, input: null, send: null };
let current = null; // the assistant message being streamed: {body, live, steps: Map, text}
let busy = false;
let loaded = false;
let session = null; // the conversation's session id, as the server names it
const docked = new Map(); // approval_id -> its card in the dock while pending

const now = () => Date.now() / 1000;
// The chat talks to this node's assistant whichever node the panels show: its sessions live here,
// and it reaches other nodes itself.
const HERE = { node: null };
const ASSISTANT_TOPIC = /^\/(assist|llm|chain)\//;
const STATUS_WORDS = { ok: "done", error: "failed", denied: "refused", skipped: "skipped",
  pending_approval: "waiting for approval", rejected: "rejected", expired: "expired", running: "running" };
const OUTCOME_WORDS = { clarify: "Question for you", escalated: "Escalated to a person", refused: "Not allowed",
  awaiting_approval: "Waiting for approval" };

// -- layout ----------------------------------------------------------------------------------

/** Build the chat inside `section` (the shell's chat view). */
export function mountChat(section) {
  ui.log = el("div", { id: "messages", class: "messages", role: "log", "aria-live": "polite", "aria-label": "Conversation",
    tabindex: "0" });
  ui.dock = el("div", { id: "approval-dock", class: "approval-dock", "aria-label": "Approvals waiting for a decision",
    role: "region", hidden: true });
  ui.input = el("textarea", { id: "chat-input", rows: "1", autocomplete: "off", "aria-label": "Message to the assistant",
    placeholder: "Ask, e.g. is nginx up?", maxlength: "4000" });
  ui.send = el("button", { type: "submit", id: "chat-send" }, "Send");
  const clear = el("button", { type: "button", id: "chat-clear", class: "ghost", title: "Forget this conversation",
    onclick: clearConversation }, "Clear");
  const form = el("form", { id: "chat-form", class: "composer", onsubmit: (e) => { e.preventDefault(); submit(); } },
    ui.input, ui.send, clear);
  ui.input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); submit(); }
    else if (e.key === "Escape") ui.input.value = "";
  });
  section.append(ui.log, ui.dock, form, el("p", { class: "hint muted" }, "Enter sends · Shift+Enter starts a new line"));

  on("*", onEvent);
  on("approval_changed", onDecided);
  setAssistant((text) => {
    document.querySelector('[aria-controls="chat-view"]')?.click();
    ask(text);
  });
  onConnect(() => {
    subscribe("/approvals").catch(() => {});
    if (!loaded) { loaded = true; resumeConversation(); }
  });
}

function scrollDown() { ui.log.scrollTop = ui.log.scrollHeight; }

function message(kind, who, ts, ...body) {
  const node = el("article", { class: `msg ${kind}` },
    el("header", { class: "msg-head" }, el("span", { class: "who" }, who), timeEl(ts)),
    el("div", { class: "msg-body" }, ...body));
  ui.log.append(node);
  scrollDown();
  return node;
}

const note = (text, ts = now()) => message("note", "Note", ts, text);

function userMessage(text, ts = now()) { return message("user", me().user || "You", ts, el("p", { class: "text" }, text)); }

function startAnswer(label = "Working on it…") {
  const live = el("p", { class: "live muted" }, label);
  const steps = el("ol", { class: "steps", "aria-label": "Steps" });
  const text = el("div", { class: "text streaming" });
  const node = message("assistant", "Assistant", now(), live, steps, text);
  node.classList.add("pending");
  current = { node, body: node.querySelector(".msg-body"), live, stepsEl: steps, steps: new Map(), textEl: text, text: "" };
  return current;
}

const ensureCurrent = () => current || startAnswer("Running…");

function finish(turn) {
  const answer = ensureCurrent();
  current = null;
  answer.node.classList.remove("pending");
  answer.body.replaceChildren(...renderTurn(turn));
  scrollDown();
}

function fail(err) {
  const answer = ensureCurrent();
  current = null;
  answer.node.classList.remove("pending");
  answer.node.classList.add("failed");
  answer.body.replaceChildren(el("p", { class: "error" }, `Could not answer: ${err.message}`));
}

// -- asking ----------------------------------------------------------------------------------

function submit() {
  const text = ui.input.value.trim();
  if (!text || busy) return;
  ui.input.value = "";
  ask(text);
}

async function ask(text) {
  if (busy) { toast("The assistant is still answering; ask again in a moment.", "warn"); return; }
  busy = true;
  ui.send.disabled = true;
  userMessage(text);
  startAnswer();
  try {
    const resp = await rpc("query_assist", { query: text }, HERE);
    finish(resp.data);
  } catch (err) {
    fail(err);
  } finally {
    busy = false;
    ui.send.disabled = false;
  }
}

async function clearConversation() {
  try {
    await rpc("clear_assist_session", {}, HERE);
  } catch (err) {
    toast(`Could not clear the conversation: ${err.message}`, "error");
    return;
  }
  ui.log.replaceChildren();
  for (const card of docked.values()) card.remove();
  docked.clear();
  ui.dock.hidden = true;
  note("Conversation cleared. Approvals already asked for still wait in the approvals list.");
}

async function resumeConversation() {
  let entries = [];
  try {
    const data = (await rpc("get_assist_session", { limit: 200 }, HERE)).data;
    session = data.session;
    entries = data.entries || [];
  } catch (err) {
    note(err.code === 404 ? "The assistant is not available on this node." : `Could not load the conversation: ${err.message}`);
    return;
  }
  for (const entry of entries) {
    if (entry.role === "user") userMessage(entry.text, entry.ts);
    else if (entry.role === "assistant") {
      message("assistant", "Assistant", entry.ts, ...(entry.turn ? renderTurn(entry.turn, { resumed: true })
        : [el("p", { class: "text" }, entry.text)]));
    } else note(entry.text, entry.ts);
  }
  if (entries.length) {
    note("Earlier conversation restored.");
    await restorePending();
  } else {
    introduce();
  }
}

async function restorePending() {
  try {
    const pending = (await rpc("list_approvals", { status: "pending" }, HERE)).data.approvals || [];
    for (const approval of pending.filter((a) => a.session === session)) dockApproval(approval);
  } catch { /* approvals unavailable: the cards stay as text */ }
}

async function introduce() {
  // Its place is taken at once: a request typed before the introduction arrives stays below it.
  const slot = message("assistant", "Assistant", now(), el("p", { class: "live muted" }, "…"));
  slot.classList.add("pending");
  try {
    const intro = (await rpc("assist_introduction", {}, HERE)).data;
    const examples = (intro.examples || []).map((ex) => el("button", { type: "button", class: "chip",
      onclick: () => { ui.input.value = ex; ui.input.focus(); } }, ex));
    slot.querySelector(".msg-body").replaceChildren(el("p", { class: "text" }, intro.text),
      ...(examples.length ? [el("div", { class: "chips", "aria-label": "Example requests" }, ...examples)] : []));
    slot.classList.remove("pending");
  } catch (err) {
    slot.remove();
    note(err.code === 404 ? "The assistant is not available on this node." : `The assistant did not answer: ${err.message}`);
  }
}

// -- live events -----------------------------------------------------------------------------

function onEvent(ev) {
  const data = ev.data || {};
  if (ev.topic === "/approvals") {
    if (ev.name === "approval_decided" || ev.name === "approval_expired") undock(data.approval_id, data.status);
    return;
  }
  if (!ASSISTANT_TOPIC.test(ev.topic || "")) return;
  switch (ev.name) {
    case "chain_step": liveStep(data); break;
    case "assist_delta": case "llm_delta": {
      const answer = ensureCurrent();
      // A model's pieces add up; the whole answer ("final") replaces them.
      answer.text = data.final ? data.text || "" : answer.text + (data.text || "");
      answer.textEl.textContent = answer.text; // plain while it streams; the final turn renders it fully
      answer.live.textContent = "Answering…";
      scrollDown();
      break;
    }
    case "approval_required": ensureCurrent().live.textContent = "Waiting for a decision…"; dockApproval(data); break;
    case "plan_finished": ensureCurrent().live.textContent = `Plan ${data.status || "finished"}.`; break;
    default: break;
  }
}

function liveStep(data) {
  const answer = ensureCurrent();
  const key = `${data.index}-${data.intent}`;
  const row = stepRow(data, null);
  const old = answer.steps.get(key);
  if (old) old.replaceWith(row); else answer.stepsEl.append(row);
  answer.steps.set(key, row);
  answer.live.textContent = `${data.check ? "Checking" : "Running"} ${data.intent}…`;
  scrollDown();
}

// -- rendering a turn --------------------------------------------------------------------------

const MODEL_STRATEGIES = new Set(["react"]);

/** The elements of one whole answer (a Turn on the wire). */
function renderTurn(turn, { resumed = false } = {}) {
  const out = [];
  const words = OUTCOME_WORDS[turn.outcome] || (turn.status === "failed" ? "Some steps failed" : null);
  if (words) out.push(el("p", { class: `badge outcome-${turn.outcome}` }, words));
  if (turn.decided) out.push(decidedLine(turn.decided));
  if (turn.diagnosis && turn.diagnosis.found) out.push(renderDiagnosis(turn.diagnosis));
  const text = MODEL_STRATEGIES.has(turn.strategy) ? el("div", { class: "text md" }, md(turn.answer))
    : el("p", { class: "text" }, turn.answer || "(no answer)");
  if (turn.diagnosis && turn.diagnosis.found) {
    out.push(el("details", { class: "full" }, el("summary", {}, "The whole write-up"), text));
  } else {
    out.push(text);
  }
  if (turn.escalation) {
    out.push(el("p", { class: "escalation" }, `A person was asked to look: ${turn.escalation.reason || "see the escalations list"}.`));
  }
  const steps = turn.steps || [];
  if (steps.length) {
    const open = steps.length <= 2 && !turn.diagnosis;
    out.push(el("ol", { class: "steps done", "aria-label": "Steps" }, ...steps.map((s) => stepRow(s, s.data, open))));
  }
  if (Array.isArray(turn.not_run) && turn.not_run.length && turn.outcome !== "awaiting_approval") {
    out.push(el("p", { class: "muted" }, `Not run: ${turn.not_run.map((s) => s.intent).join(", ")}.`));
  }
  if (turn.approval && turn.outcome === "awaiting_approval") {
    out.push(el("p", { class: "awaiting", dataset: { approvalWait: turn.approval.approval_id } },
      resumed ? `Asked for approval ${turn.approval.approval_id}.` : "Waiting for approval: the card below stays in view until someone decides."));
    if (!resumed) dockApproval(turn.approval);
  }
  if (turn.usage) out.push(el("p", { class: "muted small" }, `Model tokens: ${turn.usage.input} in, ${turn.usage.output} out.`));
  return out;
}

function renderDiagnosis(d) {
  const fix = (d.fix || []).map((s) => `${s.intent} ${paramsText(s.params)}`.trim());
  return el("section", { class: "diagnosis", "aria-label": "Diagnosis" },
    el("p", { class: "cause" }, el("strong", {}, "Likely cause: "), `${d.cause || d.component}`),
    el("p", {}, "Confidence: ", el("span", { class: `confidence conf-${d.confidence}` }, d.confidence)),
    (d.evidence || []).length ? el("div", {}, el("h3", {}, "Evidence"),
      el("ul", { class: "evidence" }, ...d.evidence.map((line) => el("li", {}, el("code", {}, line))))) : null,
    fix.length ? el("p", { class: "fix" }, el("strong", {}, "Proposed fix: "), fix.join(", then ")) : null);
}

function decidedLine(d) {
  const who = d.decided_by ? ` by ${d.decided_by}` : "";
  const verb = d.status === "rejected" ? "Rejected" : d.status === "expired" ? "Expired" : "Approved";
  return el("p", { class: `badge decided-${verb.toLowerCase()}` }, `${verb}${who}${d.reason ? `: ${d.reason}` : ""}.`);
}

function paramsText(params) {
  return Object.entries(params || {}).map(([k, v]) => `${k}=${v !== null && typeof v === "object" ? JSON.stringify(v) : v}`)
    .join(" ");
}

/** Params in a step's one-line heading: long ones shortened (the whole text is in the tooltip). */
function shortParams(params, limit = 90) {
  const text = paramsText(params);
  return text.length > limit ? el("span", { title: text }, ` ${text.slice(0, limit)}…`) : ` ${text}`;
}

function stepRow(step, data, open = false) {
  const status = step.status || "running";
  const head = el("span", { class: "step-head" },
    el("span", { class: `status st-${status}` }, STATUS_WORDS[status] || status), " ",
    el("code", {}, step.intent), step.params ? shortParams(step.params) : "",
    step.check ? el("span", { class: "muted" }, " (check)") : null);
  const row = el("li", { class: `step st-${status}`, dataset: { intent: step.intent, status } });
  if (step.message && status !== "ok") head.append(el("span", { class: "step-msg" }, ` — ${step.message}`));
  if (data === null || data === undefined) { row.append(head); return row; }
  const details = el("details", { open: open || undefined }, el("summary", {}, head), renderData(data));
  row.append(details);
  return row;
}

// -- results as tables and log lines ------------------------------------------------------------

const MAX_ROWS = 50;
const isScalar = (v) => v === null || ["string", "number", "boolean"].includes(typeof v);
const LINE_KEYS = ["line", "text", "message"];

function cell(key, value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") {
    if (/percent|pct/.test(key)) return fmt.pct(value);
    if (/uptime|seconds|duration|elapsed/.test(key)) return fmt.duration(value);
    if (/bytes|rss|size|used|free|total|available/.test(key) && value > 1024) return fmt.bytes(value);
    // Epoch times, in seconds or milliseconds (the protocol uses both).
    if (/(^ts$|time|_at$|^started|^created|^since|^expires)/.test(key) && value > 1e9) {
      return fmt.time(value > 1e12 ? value / 1000 : value);
    }
    return Number.isInteger(value) ? String(value) : value.toFixed(2);
  }
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (Array.isArray(value) && value.every(isScalar)) return value.join(", ");
  if (typeof value === "object") return paramsText(value);
  return String(value);
}

function table(rows) {
  const cols = [];
  for (const row of rows.slice(0, MAX_ROWS)) {
    for (const [k, v] of Object.entries(row)) if (!cols.includes(k) && (isScalar(v) || Array.isArray(v))) cols.push(k);
  }
  const shown = cols.slice(0, 8);
  const t = el("table", { class: "result" },
    el("thead", {}, el("tr", {}, ...shown.map((c) => el("th", { scope: "col" }, c)))),
    el("tbody", {}, ...rows.slice(0, MAX_ROWS).map((r) => el("tr", {}, ...shown.map((c) => el("td", {}, cell(c, r[c])))))));
  const wrap = el("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Result table" }, t);
  if (rows.length > MAX_ROWS) wrap.append(el("p", { class: "muted small" }, `${rows.length - MAX_ROWS} more rows not shown.`));
  return wrap;
}

function logLines(items) {
  const text = items.slice(0, 200).map((it) => {
    if (isScalar(it)) return String(it);
    const line = LINE_KEYS.map((k) => it[k]).find((v) => typeof v === "string") || "";
    const where = it.file || it.log || it.source;
    return `${where ? `${where}: ` : ""}${line}`;
  }).join("\n");
  return el("pre", { class: "log" }, text + (items.length > 200 ? `\n… ${items.length - 200} more lines` : ""));
}

const looksLikeLines = (items) => items.length && items.every((it) => typeof it === "string"
  || (it && typeof it === "object" && LINE_KEYS.some((k) => typeof it[k] === "string") && Object.keys(it).length <= 6));

/** A step's result for a person: tables for lists of records, monospace for log lines, key/value otherwise. */
export function renderData(data, depth = 0) {
  if (isScalar(data)) {
    const text = String(data);
    return text.includes("\n") ? el("pre", { class: "log" }, text) : el("p", { class: "value" }, text);
  }
  if (Array.isArray(data)) {
    if (!data.length) return el("p", { class: "muted" }, "(nothing)");
    if (looksLikeLines(data)) return logLines(data);
    if (data.every((d) => d && typeof d === "object" && !Array.isArray(d))) return table(data);
    return el("p", { class: "value" }, data.map((d) => cell("", d)).join(", "));
  }
  const box = el("div", { class: "result-obj" });
  const pairs = [];
  for (const [key, value] of Object.entries(data)) {
    if (isScalar(value) || (Array.isArray(value) && value.every(isScalar) && !looksLikeLines(value))) {
      pairs.push([key, value]);
    } else if (value && typeof value === "object" && !Array.isArray(value)
        && Object.values(value).every((v) => isScalar(v) || (Array.isArray(v) && v.every(isScalar)))) {
      for (const [k2, v2] of Object.entries(value)) pairs.push([`${key} ${k2}`, v2]);
    } else if (value && typeof value === "object" && !Array.isArray(value) && depth >= 1) {
      pairs.push([key, value]); // deeper than two levels: one line of name=value
    } else {
      box.append(el("div", { class: "result-part" }, el("h4", {}, key), renderData(value, depth + 1)));
    }
  }
  if (pairs.length) {
    box.prepend(el("dl", { class: "kv" }, ...pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, cell(k.split(" ").pop(), v))])));
  }
  return box;
}

// -- approvals --------------------------------------------------------------------------------

function mayDecide(approval) {
  const { user, role } = me();
  return canAct() && (role === "admin" || approval.requester === user);
}

function dockApproval(approval) {
  const id = approval.approval_id;
  if (!id || docked.has(id) || (approval.status && approval.status !== "pending")) return;
  const what = `${approval.intent} ${paramsText(approval.params)}`.trim();
  const reason = el("input", { type: "text", class: "reason", maxlength: "500", "aria-label": `Reason for the decision on ${id}`,
    placeholder: "Reason (optional)" });
  const buttons = [];
  const decide = (approve) => async () => {
    for (const b of buttons) b.disabled = true;
    if (approve) startAnswer("Running the approved step…");
    try {
      await confirmAction(id, approve, reason.value);
    } catch { /* onDecided shows it and re-enables the buttons */ }
  };
  if (mayDecide(approval)) {
    buttons.push(el("button", { type: "button", class: "approve", onclick: decide(true), dataset: { approve: id } }, "Approve"),
      el("button", { type: "button", class: "deny", onclick: decide(false), dataset: { reject: id } }, "Reject"));
    reason.addEventListener("keydown", (e) => { if (e.key === "Escape") reason.value = ""; });
  }
  const expires = approval.expires ? fmt.time(approval.expires / 1000) : null;
  const card = el("div", { class: `approval-card card-risk-${approval.risk}`, role: "group", "aria-label": `Approval ${id}`,
    dataset: { approvalId: id } },
  el("h3", {}, "Approval needed"),
  el("dl", { class: "kv" },
    el("dt", {}, "What"), el("dd", {}, el("code", {}, what)),
    el("dt", {}, "Where"), el("dd", {}, `node ${approval.node || identity() || "this node"}`),
    el("dt", {}, "Risk"), el("dd", {}, el("span", { class: `risk risk-${approval.risk}` }, approval.risk || "unknown")),
    el("dt", {}, "Why"), el("dd", {}, approval.rule ? `the policy rule "${approval.rule}" asks for a person's decision`
      : "the policy asks for a person's decision"),
    approval.description ? el("dt", {}, "Summary") : null,
    approval.description ? el("dd", {}, approval.description) : null,
    el("dt", {}, "Asked by"), el("dd", {}, `${approval.requester || "?"}${expires ? `, until ${expires}` : ""}`),
    approval.remaining_steps ? el("dt", {}, "Then") : null,
    approval.remaining_steps ? el("dd", {}, `${approval.remaining_steps} more step(s) of the plan`) : null),
  buttons.length ? el("div", { class: "actions" }, reason, ...buttons)
    : el("p", { class: "muted" }, canAct() ? "Only the person who asked, or an admin, can decide." : "Waiting for an operator's decision."));
  docked.set(id, card);
  ui.dock.append(card);
  ui.dock.hidden = false;
}

function undock(id, status) {
  const card = docked.get(id);
  if (!card) return;
  card.remove();
  docked.delete(id);
  ui.dock.hidden = docked.size === 0;
  for (const line of ui.log.querySelectorAll(`[data-approval-wait="${CSS.escape(id)}"]`)) {
    line.textContent = status ? `Approval ${id}: ${status}.` : `Approval ${id} decided.`;
  }
}

function onDecided(ev) {
  const { approval_id: id, response, error } = ev.data;
  if (error) {
    const card = docked.get(id);
    for (const b of card ? card.querySelectorAll("button") : []) b.disabled = false;
    if (current && current.steps.size === 0 && !current.text) { current.node.remove(); current = null; }
    toast(`Could not decide: ${error}`, "error");
    return;
  }
  undock(id, response && response.decided ? response.decided.status : null);
  if (response) finish(response);
}
