// Active alerts: severity, since, count; acknowledge, silence for a while, or ask the assistant why.
import { askAssistant, canAct, el, fmt, on, onConnect, rpc, toast } from "../core.js";
import { acted, debounce, follow, isUnknownIntent, note, when } from "./common.js";

const SILENCE_CHOICES = [[15, "15 min"], [60, "1 hour"], [240, "4 hours"], [1440, "1 day"]];
const SEVERITY_ORDER = { critical: 0, warning: 1, info: 2 };

export function mount(section) {
  const showResolved = el("input", { type: "checkbox", id: "alerts-show-resolved", dataset: { alertsResolved: "" } });
  const toolbar = el("div", { class: "toolbar" },
    el("label", { for: "alerts-show-resolved" }, showResolved, " also recently resolved"));
  const body = el("div", { class: "alerts", "aria-live": "polite" });
  section.append(toolbar, body);
  showResolved.addEventListener("change", () => refresh());

  async function refresh() {
    let resp;
    try {
      resp = await rpc("list_alerts", showResolved.checked ? { state: "all", limit: 50 } : { state: "firing", limit: 100 });
    } catch (err) {
      note(body, isUnknownIntent(err) ? "Alerts are not available on this node (no alerts module)."
        : `Could not list alerts: ${err.message}`);
      return;
    }
    render(resp.data.alerts || []);
  }

  async function run(intent, params, what) {
    try {
      await rpc(intent, params);
      toast(what, "success");
    } catch (err) {
      toast(`${what} failed: ${err.message}`, "error");
    } finally {
      acted();
      await refresh();
    }
  }

  function actions(a) {
    const out = [];
    // Asking the assistant changes nothing: everyone who can chat may investigate.
    const investigate = el("button", { type: "button", dataset: { investigate: String(a.id) } }, "Investigate");
    investigate.addEventListener("click", () => askAssistant(`why is alert ${a.id} firing? (${a.summary})`));
    if (a.state === "firing") out.push(investigate);
    if (!canAct()) return out;
    if (a.state === "firing" && !a.acknowledged) {
      const ack = el("button", { type: "button", dataset: { ack: String(a.id) } }, "Acknowledge");
      ack.addEventListener("click", () => run("ack_alert", { id: a.id }, `Alert ${a.id} acknowledged`));
      out.push(ack);
    }
    if (a.silenced) {
      const lift = el("button", { type: "button", dataset: { unsilence: String(a.id) } }, "Lift silence");
      lift.addEventListener("click", () => run("silence_alert", { id: a.id, minutes: 0 }, `Alert ${a.id} no longer silenced`));
      out.push(lift);
    } else if (a.state === "firing") {
      const selectId = `silence-for-${a.id}`;
      const choice = el("select", { id: selectId, dataset: { silenceFor: String(a.id) } },
        ...SILENCE_CHOICES.map(([m, label]) => el("option", { value: String(m) }, label)));
      const mute = el("button", { type: "button", dataset: { silence: String(a.id) } }, "Silence");
      mute.addEventListener("click", () => run("silence_alert", { id: a.id, minutes: Number(choice.value) },
        `Alert ${a.id} silenced for ${choice.selectedOptions[0].textContent}`));
      out.push(el("span", { class: "inline" }, el("label", { for: selectId, class: "sr-only" }, `Silence alert ${a.id} for`),
        choice, mute));
    }
    return out;
  }

  function render(alerts) {
    if (!alerts.length) {
      note(body, showResolved.checked ? "No alerts." : "No alerts are firing.", "ok");
      return;
    }
    alerts.sort((x, y) => (x.state === y.state ? 0 : x.state === "firing" ? -1 : 1)
      || (SEVERITY_ORDER[x.severity] ?? 3) - (SEVERITY_ORDER[y.severity] ?? 3) || y.last_seen - x.last_seen);
    body.replaceChildren(el("ul", { class: "cards" }, ...alerts.map((a) => {
      const marks = [];
      if (a.acknowledged) marks.push(`acknowledged by ${a.acked_by}${a.ack_note ? `: ${a.ack_note}` : ""}`);
      if (a.silenced) marks.push(`silenced until ${fmt.time(a.silenced_until)}${a.silence_reason ? ` (${a.silence_reason})` : ""}`);
      const lines = (a.details && Array.isArray(a.details.lines)) ? a.details.lines : [];
      return el("li", { class: `card sev-${a.severity} state-${a.state}`, dataset: { alert: String(a.id), state: a.state } },
        el("p", { class: "card-title" },
          el("span", { class: `badge sev-${a.severity}` }, a.severity), " ", a.summary),
        el("p", { class: "muted" },
          `alert ${a.id} · ${a.source} · ${a.subject} · `,
          a.count > 1 ? `${a.count} times · ` : "once · ",
          a.state === "firing" ? "since " : "resolved ",
          when(a.state === "firing" ? a.first_seen : a.resolved_at),
          ` (${fmt.ago(a.state === "firing" ? a.first_seen : a.resolved_at)})`),
        marks.length ? el("p", { class: "muted" }, marks.join(" · ")) : null,
        lines.length ? el("details", {}, el("summary", {}, `Last ${Math.min(5, lines.length)} log line(s) (quoted data)`),
          el("pre", { class: "mono" }, lines.slice(-5).join("\n"))) : null,
        el("div", { class: "card-actions" }, ...actions(a)));
    })));
  }

  const later = debounce(refresh, 200);
  const isAlerts = follow("/alerts");
  on("data_generated", (ev) => { if (isAlerts(ev)) later(); });
  on("node_changed", refresh);
  // A silenced alert resolves without an event, and "N min ago" ages: look again now and then.
  setInterval(refresh, 30000);
  onConnect(refresh);
}
