// The dashboard shell: login, the header, the chat and the panels side by side on a wide screen,
// as tabs on a narrow one (< 900 px), dark and light themes.

import { el, identity, login, logout, me, on, resume, toast } from "./core.js";
import { mountChat } from "./chat.js";
import { PANELS } from "./panels/index.js";

const $ = (id) => document.getElementById(id);
const THEME_KEY = "cs.theme";
let built = false;

// -- theme -----------------------------------------------------------------------------

function applyTheme(theme) {
  if (theme === "dark" || theme === "light") document.documentElement.dataset.theme = theme;
  else delete document.documentElement.dataset.theme;
  const dark = document.documentElement.dataset.theme
    ? document.documentElement.dataset.theme === "dark"
    : window.matchMedia("(prefers-color-scheme: dark)").matches;
  $("theme-toggle").textContent = dark ? "Light" : "Dark";
  $("theme-toggle").title = dark ? "Switch to the light theme" : "Switch to the dark theme";
}

function toggleTheme() {
  const dark = document.documentElement.dataset.theme
    ? document.documentElement.dataset.theme === "dark"
    : window.matchMedia("(prefers-color-scheme: dark)").matches;
  const next = dark ? "light" : "dark";
  localStorage.setItem(THEME_KEY, next);
  applyTheme(next);
}

// -- layout ----------------------------------------------------------------------------

function selectView(id) {
  // On a phone the views scroll inside #views: a panel without controls must still be scrollable
  // from the keyboard, so #views takes focus (tabindex 0) only there.
  $("views").tabIndex = window.matchMedia("(max-width: 899px)").matches ? 0 : -1;
  for (const view of document.querySelectorAll(".view")) view.classList.toggle("active", view.id === id);
  for (const tab of $("tabs").querySelectorAll("button")) {
    const active = tab.getAttribute("aria-controls") === id;
    tab.classList.toggle("active", active);
    if (active) tab.setAttribute("aria-current", "true");
    else tab.removeAttribute("aria-current");
  }
}

function addTab(viewId, title) {
  const tab = el("button", { type: "button", class: "tab", "aria-controls": viewId, onclick: () => selectView(viewId) },
    title);
  // Arrow keys move between tabs, as in any tab bar.
  tab.addEventListener("keydown", (e) => {
    if (e.key !== "ArrowRight" && e.key !== "ArrowLeft") return;
    const tabs = [...$("tabs").querySelectorAll("button")];
    const next = tabs[(tabs.indexOf(tab) + (e.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
    next.focus();
    next.click();
  });
  $("tabs").append(tab);
}

function syncTab(section) {
  const tab = $("tabs").querySelector(`[aria-controls="${section.id}"]`);
  if (tab) tab.hidden = section.hidden;
  if (section.hidden && section.classList.contains("active")) selectView("chat-view");
}

function build() {
  if (built) return;
  built = true;
  addTab("chat-view", "Chat");
  mountChat($("chat-view"));
  for (const panel of PANELS) {
    const viewId = `panel-${panel.id}`;
    const titleId = `${viewId}-title`;
    const section = el("section", { id: viewId, class: "panel view", "aria-labelledby": titleId },
      el("h2", { id: titleId }, panel.title));
    $("panels").append(section);
    addTab(viewId, panel.title);
    // A panel with nothing to show here hides its section (the node switcher without
    // federation): its tab goes with it.
    new MutationObserver(() => syncTab(section)).observe(section, { attributes: true, attributeFilter: ["hidden"] });
    try {
      panel.mount(section);
      syncTab(section);
    } catch (err) {
      console.warn(`panel ${panel.id} failed to start:`, err);
      section.append(el("p", { class: "error" }, `This panel could not start: ${err.message}`));
    }
  }
  // Without panels (none on this build) the chat takes the whole width.
  $("views").classList.toggle("no-panels", PANELS.length === 0);
  selectView("chat-view");
}

// -- session ---------------------------------------------------------------------------

function showApp() {
  const { user, role } = me();
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  $("who").textContent = `${user} (${role})`;
  document.body.dataset.role = role;
  build();
}

on("login", showApp);
on("identity", () => { $("node-name").textContent = identity() ? `node ${identity()}` : ""; });
on("connection", (ev) => {
  const pill = $("conn-state");
  pill.textContent = ev.data.connected ? "connected" : "reconnecting…";
  pill.className = ev.data.connected ? "pill on" : "pill warn";
});
on("logout", (ev) => {
  // A fresh page is the simplest way to drop every panel's state and listener.
  if (built) { sessionStorage.setItem("cs.logout", ev.data.message || ""); location.reload(); return; }
  $("app-view").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = ev.data.message || "";
});

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("login-error").textContent = "";
  $("login-submit").disabled = true;
  try {
    await login($("login-user").value.trim(), $("login-password").value);
    $("login-password").value = "";
  } catch (err) {
    $("login-error").textContent = err.code === 401 || err.code === 429 ? err.message
      : `Could not log in: ${err.message}. Check that the node is running.`;
  } finally {
    $("login-submit").disabled = false;
  }
});
$("logout").addEventListener("click", () => logout());
$("theme-toggle").addEventListener("click", toggleTheme);
window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => applyTheme(localStorage.getItem(THEME_KEY)));
applyTheme(localStorage.getItem(THEME_KEY));

const farewell = sessionStorage.getItem("cs.logout");
sessionStorage.removeItem("cs.logout");
if (farewell) $("login-error").textContent = farewell;
if (!resume()) $("login-user").focus();
window.addEventListener("unhandledrejection", (e) => {
  // A failed background refresh must not go unseen, nor be a console error for every blip.
  e.preventDefault();
  console.warn("unhandled:", e.reason);
  toast(e.reason && e.reason.message ? e.reason.message : "Something went wrong in the background.", "warn");
});
