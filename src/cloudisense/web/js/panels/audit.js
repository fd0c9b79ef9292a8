// The audit log with filters: user, intent, outcome and a time range (non-admins see their own records).
import { el, me, on, onConnect, rpc } from "../core.js";
import { debounce, isUnknownIntent, note, onActed, paramsText, when } from "./common.js";

const OUTCOMES = ["success", "error", "denied", "pending_approval", "started", "interrupted"];
/** The dashboard's own reads: hidden by default so what people and the assistant did stands out. */
const HOUSEKEEPING = ["list_targets", "list_approvals", "list_alerts", "list_logs", "read_log", "get_audit_log",
  "list_chatops", "list_nodes", "subscribe_channel", "unsubscribe_channel", "list_channels", "assist_introduction"];

function field(id, label, input) {
  input.id = id;
  return el("div", { class: "field" }, el("label", { for: id }, label), input);
}

/** A ``datetime-local`` value as epoch seconds (local time), or undefined when empty. */
function epoch(input) {
  if (!input.value) return undefined;
  const ms = new Date(input.value).getTime();
  return Number.isFinite(ms) ? ms / 1000 : undefined;
}

export function mount(section) {
  const user = el("input", { type: "text", autocomplete: "off", placeholder: "anyone", dataset: { auditUser: "" } });
  const intent = el("input", { type: "text", autocomplete: "off", placeholder: "any", dataset: { auditIntent: "" } });
  const outcome = el("select", { dataset: { auditOutcome: "" } }, el("option", { value: "" }, "any"),
    ...OUTCOMES.map((o) => el("option", { value: o }, o.replace("_", " "))));
  const since = el("input", { type: "datetime-local", step: "1", dataset: { auditSince: "" } });
  const until = el("input", { type: "datetime-local", step: "1", dataset: { auditUntil: "" } });
  const reads = el("input", { type: "checkbox", id: "audit-hide-reads", checked: true, dataset: { auditHideReads: "" } });
  const apply = el("button", { type: "submit", class: "primary", dataset: { auditApply: "" } }, "Apply");
  const reset = el("button", { type: "reset" }, "Clear");
  const form = el("form", { class: "filters", "aria-label": "audit filters" },
    field("audit-user", "User", user), field("audit-intent", "Intent", intent), field("audit-outcome", "Outcome", outcome),
    field("audit-since", "From", since), field("audit-until", "To", until),
    el("div", { class: "field" }, el("label", { for: "audit-hide-reads" }, reads, " hide dashboard reads")),
    el("div", { class: "field buttons" }, apply, reset));
  const status = el("p", { class: "muted", "data-audit-status": "", "aria-live": "polite" });
  const body = el("div", { class: "audit-rows", tabindex: "0", role: "region", "aria-label": "Audit records" });
  section.append(form, status, body);

  async function refresh() {
    const self = me();
    if (self.role !== "admin") {
      // The node answers non-admins with their own records only: say so instead of offering a filter.
      user.value = self.user;
      user.readOnly = true;
      user.title = "only admins see other users' records";
    }
    const params = { limit: 100 };
    if (user.value.trim()) params.user = user.value.trim();
    if (intent.value.trim()) params.intent = intent.value.trim();
    if (outcome.value) params.outcome = outcome.value;
    const from = epoch(since), to = epoch(until);
    if (from !== undefined) params.since = from;
    if (to !== undefined) params.until = to;
    if (reads.checked) params.exclude_intents = HOUSEKEEPING;
    let resp;
    try {
      resp = await rpc("get_audit_log", params);
    } catch (err) {
      if (isUnknownIntent(err)) note(body, "The audit log is not available on this node (no audit module).");
      status.textContent = isUnknownIntent(err) ? "" : `Could not read the audit log: ${err.message}`;
      return;
    }
    const records = resp.data.records || [];
    status.textContent = `${records.length} record(s)${records.length === params.limit ? " (the newest shown)" : ""}`;
    if (!records.length) {
      body.replaceChildren(el("p", { class: "panel-note muted" }, "No records match these filters."));
      return;
    }
    body.replaceChildren(el("table", { class: "table" },
      el("thead", {}, el("tr", {}, ...["Time", "User", "Intent", "Outcome", "Details"].map((label) => el("th", { scope: "col" }, label)))),
      el("tbody", {}, ...records.map((r) => el("tr", { dataset: { auditRow: String(r.id), intent: r.intent, outcome: r.outcome, user: r.user } },
        el("td", {}, when(r.ts)),
        el("td", {}, r.user, el("span", { class: "muted" }, ` (${r.role}${r.client_kind !== "websocket" ? `, ${r.client_kind}` : ""})`)),
        el("td", {}, el("code", {}, r.intent), " ", el("span", { class: "muted" }, paramsText(r.params))),
        el("td", {}, el("span", { class: `badge outcome-${r.outcome}` }, r.outcome.replace("_", " "))),
        el("td", { class: "muted" }, [r.message, r.rule ? `rule ${r.rule}` : null].filter(Boolean).join(" · ")))))));
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); refresh(); });
  form.addEventListener("reset", () => setTimeout(refresh, 0));
  const later = debounce(refresh, 500);
  onActed(later);
  on("approval_changed", later);
  on("node_changed", refresh);
  onConnect(refresh);
}
