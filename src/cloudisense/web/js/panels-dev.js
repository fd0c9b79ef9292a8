// D2's development page: log in, mount every panel into a section as D1's shell will (DASH.md).
import { el, login, me, on } from "./core.js";
import { PANELS } from "./panels/index.js";

const $ = (id) => document.getElementById(id);

function mountAll() {
  const host = $("dev-panels");
  for (const panel of PANELS) {
    const titleId = `panel-${panel.id}-title`;
    const section = el("section", { class: "panel", id: `panel-${panel.id}`, "aria-labelledby": titleId },
      el("h2", { id: titleId }, panel.title));
    host.append(section);
    panel.mount(section);
  }
  host.hidden = false;
}

// askAssistant lands in the chat in the real shell; here it is listed so tests can see it.
on("ask_assistant", (ev) => {
  $("dev-asked").hidden = false;
  $("dev-asked-list").append(el("li", { "data-asked": "" }, ev.data.text));
});

$("dev-login").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("dev-error").textContent = "";
  try {
    await login($("dev-user").value.trim(), $("dev-password").value);
    $("dev-login").hidden = true;
    $("dev-who").textContent = `${me().user} (${me().role})`;
    mountAll();
  } catch (err) {
    $("dev-error").textContent = err.message;
  }
});

$("dev-theme").addEventListener("click", () => {
  const root = document.documentElement;
  const dark = root.dataset.theme !== "dark";
  root.dataset.theme = dark ? "dark" : "light";
  $("dev-theme").setAttribute("aria-pressed", String(dark));
});
