// Managed services: state, health, uptime, and start / stop / restart through the node's policy.
import { canAct, el, fmt, me, on, onConnect, rpc } from "../core.js";
import { actThroughPolicy, acted, debounce, follow, isUnknownIntent, note, panelSession, tellOutcome } from "./common.js";

const ACTIONS = [
  { intent: "start_target", label: "Start", when: (t) => t.state !== "running" && t.state !== "starting" },
  { intent: "restart_target", label: "Restart", when: (t) => t.state === "running" },
  { intent: "stop_target", label: "Stop", when: (t) => t.state === "running" || t.state === "starting" },
];

export function mount(section) {
  const body = el("div", { class: "services", tabindex: "0", role: "region", "aria-label": "Services" });
  section.append(body);
  /** Targets by name, as last listed; ``waiting``: name → the approval a button is waiting on. */
  const known = { targets: [], waiting: new Map(), loadedAt: 0 };

  async function refresh() {
    let resp;
    try {
      resp = await rpc("list_targets", { details: true });
    } catch (err) {
      note(body, isUnknownIntent(err) ? "No managed services on this node." : `Could not list services: ${err.message}`);
      return;
    }
    known.targets = resp.data.targets || [];
    known.loadedAt = Date.now() / 1000;
    render();
  }

  function uptime(t) {
    if (t.state !== "running" || typeof t.uptime !== "number") return "–";
    return fmt.duration(t.uptime + (Date.now() / 1000 - known.loadedAt));
  }

  async function act(t, action, button) {
    for (const b of body.querySelectorAll(`[data-target="${CSS.escape(t.name)}"] button`)) b.disabled = true;
    button.setAttribute("aria-busy", "true");
    try {
      const outcome = await actThroughPolicy(action.intent, { name: t.name }, panelSession(me().user, "services"));
      if (outcome.kind === "approval") known.waiting.set(t.name, outcome.approval);
      tellOutcome(outcome);
    } catch (err) {
      tellOutcome({ kind: "failed", text: `${action.label} ${t.name}: ${err.message}` });
    } finally {
      acted();
      await refresh();
    }
  }

  function render() {
    if (!known.targets.length) {
      note(body, "No managed services are configured ([targets.<name>] in the node's config).");
      return;
    }
    const rows = known.targets.map((t) => {
      const waiting = known.waiting.get(t.name);
      const cells = [
        el("th", { scope: "row" }, t.name),
        el("td", {}, el("span", { class: `badge state-${t.state}`, "data-state": t.state }, t.state)),
        el("td", { dataset: { label: "health" } }, el("span", { class: `badge health-${t.health}`, "data-health": t.health }, t.health)),
        el("td", { "data-uptime": "", dataset: { label: "up" }, title: t.started_at ? `started ${new Date(t.started_at).toLocaleString()}` : null }, uptime(t)),
        el("td", { class: "muted" }, t.pid ? `pid ${t.pid}` : ""),
      ];
      if (canAct()) {
        const buttons = ACTIONS.filter((a) => a.when(t)).map((a) => {
          const b = el("button", { type: "button", class: a.intent === "stop_target" ? "danger" : "",
            dataset: { action: a.intent }, "aria-label": `${a.label} ${t.name}` }, a.label);
          b.addEventListener("click", () => act(t, a, b));
          return b;
        });
        cells.push(el("td", { class: "actions" }, ...buttons,
          waiting ? el("span", { class: "badge waiting", "data-waiting": waiting.approval_id },
            "waiting for approval") : null));
      }
      return el("tr", { dataset: { target: t.name, state: t.state } }, ...cells);
    });
    const head = ["Service", "State", "Health", "Uptime", "Process"].concat(canAct() ? ["Actions"] : []);
    body.replaceChildren(el("table", { class: "table" },
      el("thead", {}, el("tr", {}, ...head.map((label) => el("th", { scope: "col" }, label)))),
      el("tbody", {}, ...rows)));
  }

  const later = debounce(refresh, 200);
  const isTargets = follow("/targets");
  follow("/approvals");
  on("target_state", (ev) => { if (isTargets(ev)) later(); });
  // An approval decided elsewhere (this panel's, the chat's) may have changed a service.
  const settle = (ev) => {
    const id = ev.data && (ev.data.approval_id || (ev.data.decided && ev.data.decided.approval_id));
    for (const [name, a] of known.waiting) if (!id || a.approval_id === id) known.waiting.delete(name);
    later();
  };
  on("approval_decided", settle);
  on("approval_expired", settle);
  on("approval_changed", settle);
  on("node_changed", () => { known.waiting.clear(); refresh(); });
  // Uptimes tick between refreshes.
  setInterval(() => {
    for (const row of body.querySelectorAll("tr[data-target]")) {
      const t = known.targets.find((x) => x.name === row.dataset.target);
      const cell = row.querySelector("[data-uptime]");
      if (t && cell) cell.textContent = uptime(t);
    }
  }, 1000);
  onConnect(refresh);
}
