// Live tail of a configured log: choose it, filter lines, pause and resume; text only, bounded.
import { el, on, onConnect, rpc, subscribe, unsubscribe } from "../core.js";
import { isUnknownIntent, note, topicOf } from "./common.js";

/** Lines kept on screen (and held while paused): the oldest go first. */
export const MAX_LINES = 500;
/** Lines read from the file's end when a log is chosen. */
const BACKLOG = 100;

export function mount(section) {
  const choose = el("select", { id: "log-choice", dataset: { logChoice: "" } });
  const filter = el("input", { id: "log-filter", type: "search", placeholder: "text the lines contain",
    autocomplete: "off", dataset: { logFilter: "" } });
  const pause = el("button", { type: "button", "aria-pressed": "false", dataset: { logPause: "" } }, "Pause");
  const status = el("span", { class: "muted", "data-log-status": "", "aria-live": "polite" });
  const view = el("div", { class: "logview mono", tabindex: "0", role: "log", "aria-label": "log lines",
    dataset: { logLines: "" } });
  const toolbar = el("div", { class: "toolbar" },
    el("label", { for: "log-choice" }, "Log"), choose,
    el("label", { for: "log-filter" }, "Filter"), filter, pause, status);
  const body = el("div", { class: "logtail" }, toolbar, view);
  section.append(body);

  const tail = { name: null, topic: null, lines: [], held: [], paused: false };

  function matches(line) {
    const want = filter.value.trim().toLowerCase();
    return !want || line.toLowerCase().includes(want);
  }

  function lineNode(text) {
    const node = el("div", { class: "logline" }, text);  // a text node: markup in a log line stays text
    node.hidden = !matches(text);
    return node;
  }

  function keepBounded(list) {
    if (list.length > MAX_LINES) list.splice(0, list.length - MAX_LINES);
  }

  function show(lines) {
    const atBottom = view.scrollHeight - view.scrollTop - view.clientHeight < 30;
    tail.lines.push(...lines);
    keepBounded(tail.lines);
    view.append(...lines.map(lineNode));
    while (view.childElementCount > MAX_LINES) view.firstElementChild.remove();
    if (atBottom) view.scrollTop = view.scrollHeight;
    describe();
  }

  function describe() {
    const shown = [...view.children].filter((n) => !n.hidden).length;
    const parts = [`${shown} of ${tail.lines.length} line(s)`];
    if (tail.paused) parts.push(`paused, ${tail.held.length} new line(s) held`);
    status.textContent = parts.join(" · ");
  }

  async function follow(name) {
    if (tail.topic) await unsubscribe(tail.topic).catch(() => {});
    tail.name = name;
    tail.topic = null;
    tail.lines = [];
    tail.held = [];
    view.replaceChildren();
    if (!name) return;
    const option = [...choose.options].find((o) => o.value === name);
    tail.topic = topicOf((option && option.dataset.topic) || `/logging/${name}`);
    try {
      await subscribe(tail.topic);
      const resp = await rpc("read_log", { name, lines: BACKLOG });
      if (tail.name === name) show(resp.data.lines || []);
    } catch (err) {
      status.textContent = `Could not read ${name}: ${err.message}`;
    }
  }

  async function load() {
    let resp;
    try {
      resp = await rpc("list_logs", {});
    } catch (err) {
      note(body, isUnknownIntent(err) ? "No logs are configured on this node (no logs module)."
        : `Could not list logs: ${err.message}`);
      return;
    }
    const logs = Array.isArray(resp.data) ? resp.data : resp.data.logs || [];
    if (!logs.length) {
      status.textContent = "No logs are configured ([logs.files] in the node's config).";
      return;
    }
    const keep = tail.name && logs.some((l) => l.name === tail.name) ? tail.name : logs[0].name;
    choose.replaceChildren(...logs.map((l) => el("option", { value: l.name, dataset: { topic: l.topic } }, l.name)));
    choose.value = keep;
    await follow(keep);
  }

  choose.addEventListener("change", () => follow(choose.value));
  filter.addEventListener("input", () => {
    for (const node of view.children) node.hidden = !matches(node.textContent);
    describe();
  });
  filter.addEventListener("keydown", (e) => { if (e.key === "Escape") { filter.value = ""; filter.dispatchEvent(new Event("input")); } });
  pause.addEventListener("click", () => {
    tail.paused = !tail.paused;
    pause.textContent = tail.paused ? "Resume" : "Pause";
    pause.setAttribute("aria-pressed", String(tail.paused));
    if (!tail.paused && tail.held.length) {
      const held = tail.held;
      tail.held = [];
      show(held);
    }
    describe();
  });

  on("data_generated", (ev) => {
    if (!tail.topic || ev.topic !== tail.topic || !ev.data) return;
    const lines = Array.isArray(ev.data.lines) ? ev.data.lines.map(String)
      : String(ev.data.data || "").split("\n").filter((x, i, all) => x || i < all.length - 1);
    if (tail.paused) {
      tail.held.push(...lines);
      keepBounded(tail.held);
      describe();
    } else show(lines);
  });
  on("error_generated", (ev) => {
    if (tail.topic && ev.topic === tail.topic) status.textContent = (ev.data && ev.data.message) || "the tail reported an error";
  });
  on("node_changed", load);
  onConnect(load);
}
