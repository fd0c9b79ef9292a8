// The node switcher: with federation on, choose which node the panels show and act on.
import { currentNode, el, fmt, onConnect, rpc, setNode } from "../core.js";
import { isUnknownIntent } from "./common.js";

export function mount(section) {
  const choose = el("select", { id: "node-choice", dataset: { nodeChoice: "" } });
  const status = el("span", { class: "muted", "data-node-status": "", "aria-live": "polite" });
  section.append(el("div", { class: "toolbar" }, el("label", { for: "node-choice" }, "Node"), choose, status));
  // Hidden until the node says federation is on: a single node has nothing to switch.
  section.hidden = true;

  async function load() {
    let resp;
    try {
      resp = await rpc("list_nodes", {});
    } catch (err) {
      section.hidden = true;
      if (!isUnknownIntent(err)) console.warn("list_nodes failed:", err.message);
      return;
    }
    const d = resp.data || {};
    section.hidden = !d.enabled;
    if (!d.enabled) return;
    const nodes = d.nodes || [];
    choose.replaceChildren(el("option", { value: "" }, `${d.identity} (this node)`),
      ...nodes.map((n) => el("option", { value: n.identity, disabled: !n.online },
        `${n.identity} — ${n.online ? "online" : `offline, last seen ${fmt.ago(n.last_seen)}`}`)));
    choose.value = currentNode() || "";
    status.textContent = d.connected ? `${nodes.filter((n) => n.online).length} other node(s) online`
      : "not connected to the federation broker";
  }

  choose.addEventListener("change", () => {
    setNode(choose.value || null);
    status.textContent = choose.value ? `Showing ${choose.value}` : "Showing this node";
  });
  onConnect(() => { if (!currentNode()) load(); });
}
