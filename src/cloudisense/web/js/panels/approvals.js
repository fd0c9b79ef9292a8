// Pending approvals: what will run, where, at what risk and why, with Approve / Reject and a reason.
import { canAct, confirmAction, el, fmt, me, on, onConnect, rpc, toast } from "../core.js";
import { acted, debounce, follow, isUnknownIntent, note, paramsText, when } from "./common.js";

export function mount(section) {
  const body = el("div", { class: "approvals" });
  section.append(body);

  async function refresh() {
    let resp;
    try {
      resp = await rpc("list_approvals", { status: "pending" });
    } catch (err) {
      note(body, isUnknownIntent(err) ? "Approvals are not available on this node (no assistant module)."
        : `Could not list approvals: ${err.message}`);
      return;
    }
    render(resp.data.approvals || []);
  }

  async function decide(a, approve, reasonInput, item) {
    for (const b of item.querySelectorAll("button")) b.disabled = true;
    try {
      const resp = await confirmAction(a.approval_id, approve, reasonInput.value.trim() || undefined);
      const d = resp.data || {};
      const text = approve ? (d.answer || `Approved: ${a.description}`) : `Rejected: nothing was run (${a.intent}).`;
      toast(text, approve ? "success" : "info");
    } catch (err) {
      toast(`Could not decide ${a.approval_id}: ${err.message}`, "error");
    } finally {
      acted();
      await refresh();
    }
  }

  function render(items) {
    if (!items.length) {
      note(body, "Nothing waits for a decision.");
      return;
    }
    const self = me();
    body.replaceChildren(el("ul", { class: "cards" }, ...items.map((a) => {
      const item = el("li", { class: `card risk-${a.risk}`, dataset: { approval: a.approval_id } },
        el("p", { class: "card-title" }, a.description),
        el("dl", { class: "facts" },
          el("dt", {}, "Runs"), el("dd", {}, el("code", {}, `${a.intent} ${paramsText(a.params)}`.trim())),
          el("dt", {}, "Risk"), el("dd", {}, el("span", { class: `badge risk-${a.risk}` }, a.risk)),
          el("dt", {}, "Asked by"), el("dd", {}, a.requester),
          el("dt", {}, "Why"), el("dd", {}, a.rule ? `policy rule ${a.rule}` : "the policy asks for a person"),
          el("dt", {}, "Asked"), el("dd", {}, when(a.created / 1000)),
          el("dt", {}, "Expires"), el("dd", {}, `${when(a.expires / 1000).textContent} (in ${fmt.duration(a.expires / 1000 - Date.now() / 1000)})`),
          a.remaining_steps ? el("dt", {}, "Then") : null,
          a.remaining_steps ? el("dd", {}, `${a.remaining_steps} more step(s) of the plan`) : null));
      // Only the requester or an admin may decide (the node checks it again); a viewer sees no buttons.
      const mayDecide = canAct() && (self.role === "admin" || self.user === a.requester);
      if (mayDecide) {
        const reasonId = `reason-${a.approval_id}`;
        const reason = el("input", { id: reasonId, type: "text", maxlength: "500", placeholder: "optional",
          dataset: { reason: a.approval_id } });
        const approve = el("button", { type: "button", class: "primary", dataset: { approve: a.approval_id } }, "Approve");
        const reject = el("button", { type: "button", class: "danger", dataset: { reject: a.approval_id } }, "Reject");
        approve.addEventListener("click", () => decide(a, true, reason, item));
        reject.addEventListener("click", () => decide(a, false, reason, item));
        item.append(el("div", { class: "card-actions" },
          el("label", { for: reasonId }, "Reason"), reason, approve, reject));
      } else if (canAct()) {
        item.append(el("p", { class: "muted" }, `Waiting for ${a.requester} or an admin to decide.`));
      }
      return item;
    })));
  }

  const later = debounce(refresh, 150);
  for (const name of ["approval_required", "approval_decided", "approval_expired", "approval_changed"]) on(name, later);
  on("node_changed", refresh);
  // Expiry is shown as "in N min": keep it honest without an event.
  setInterval(refresh, 30000);
  follow("/approvals");
  onConnect(refresh);
}
