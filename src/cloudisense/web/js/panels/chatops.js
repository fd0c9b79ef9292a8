// The ChatOps log: what the node's agent observed, proposed, did and concluded, live from /chatops.
import { el, on, onConnect, rpc } from "../core.js";
import { debounce, follow, isUnknownIntent, note, when } from "./common.js";

const KEEP = 200;
const KIND_WORDS = { observed: "observed", proposed: "proposed", did: "did", concluded: "concluded", escalated: "escalated" };

export function mount(section) {
  const query = el("input", { id: "chatops-query", type: "search", placeholder: "text the entries contain",
    autocomplete: "off", dataset: { chatopsQuery: "" } });
  const toolbar = el("form", { class: "toolbar", role: "search" },
    el("label", { for: "chatops-query" }, "Search"), query, el("button", { type: "submit" }, "Search"));
  const body = el("div", { class: "chatops" });
  section.append(toolbar, body);
  const state = { entries: [], available: true };

  function entryNode(e) {
    return el("li", { class: `entry kind-${e.kind}`, dataset: { chatopsEntry: String(e.id), kind: e.kind } },
      el("span", { class: "entry-time" }, when(e.ts)),
      el("span", { class: `badge kind-${e.kind}` }, KIND_WORDS[e.kind] || String(e.kind)),
      el("span", { class: "entry-text" }, String(e.text ?? "")),
      e.alert_id ? el("span", { class: "muted" }, ` · alert ${e.alert_id}`) : null,
      e.node ? el("span", { class: "muted" }, ` · ${e.node}`) : null);
  }

  function render() {
    if (!state.entries.length) {
      note(body, query.value.trim() ? "No entries match." : "Nothing in the ChatOps log yet.");
      return;
    }
    // Oldest first, as a conversation reads.
    body.replaceChildren(el("ol", { class: "entries", "aria-live": "polite", tabindex: "0", "aria-label": "ChatOps entries" },
      ...state.entries.slice().reverse().map(entryNode)));
  }

  async function refresh() {
    const params = { limit: 50 };
    if (query.value.trim()) params.query = query.value.trim();
    let resp;
    try {
      resp = await rpc("list_chatops", params);
    } catch (err) {
      state.available = !isUnknownIntent(err);
      note(body, state.available ? `Could not read the ChatOps log: ${err.message}`
        : "The ChatOps log is not available on this node.");
      return;
    }
    state.available = true;
    state.entries = resp.data.entries || [];
    render();
  }

  toolbar.addEventListener("submit", (e) => { e.preventDefault(); refresh(); });
  const later = debounce(refresh, 300);
  const isChatops = follow("/chatops");
  on("*", (ev) => {
    if (!isChatops(ev) || !state.available) return;
    const isEntry = ev.name === "chatops_entry" || (ev.meta && ev.meta.event === "chatops_entry");
    if (!isEntry || !ev.data) return;
    if (query.value.trim()) { later(); return; }  // the node filters: ask it again
    state.entries.unshift(ev.data);
    state.entries.length = Math.min(state.entries.length, KEEP);
    render();
  });
  on("node_changed", refresh);
  onConnect(refresh);
}
