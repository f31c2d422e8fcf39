// The page's entry point: settings from the server, the theme, sign-in, then one of
// two UIs: OpenAI's <openai-chatkit> element when its script loads from OpenAI's CDN,
// else the built-in client (app.js), which needs nothing but this server.
import { Api, ApiError, authorizedFetch, setToken, whenUnauthorized } from "./api.js";

const config = JSON.parse(document.getElementById("config").textContent);
const $ = (id) => document.getElementById(id);
// On a closed network the CDN may never answer: fall back rather than wait.
const CHATKIT_TIMEOUT_MS = 6000;
const THEME_KEY = "chatkit-backend.theme";
const LOGIN_STATE_KEY = "chatkit-backend.login-state";

// Each prompt shows off a built-in agent: a tool call with AGENT=erp-support (after
// `chatkit-backend seed-demo`), a handoff with AGENT=router.
const PROMPTS = [
  { label: "Look up employee 7", prompt: "Who is employee 7?", icon: "search" },
  { label: "Ask for a refund", prompt: "I need a refund for my invoice", icon: "lifesaver" },
  { label: "What can you do?", prompt: "What can you do?", icon: "lightbulb" },
];

// ---- theme: light or dark, remembered in this browser (it is not sensitive) ----

const themeListeners = [];
let theme = storedTheme() || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");

function storedTheme() {
  try {
    return localStorage.getItem(THEME_KEY);
  } catch {
    return null; // storage can be switched off; the default theme will do
  }
}

function applyTheme(value) {
  theme = value;
  document.documentElement.dataset.theme = value;
  $("theme-toggle").setAttribute("aria-pressed", String(value === "dark"));
  for (const listener of themeListeners) listener(value);
}

$("theme-toggle").addEventListener("click", () => {
  const next = theme === "dark" ? "light" : "dark";
  try {
    localStorage.setItem(THEME_KEY, next);
  } catch {
    // Not remembered, but still applied.
  }
  applyTheme(next);
});

let statusTimer = null;

/** A line under the header; information fades after a while, errors stay. */
function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.hidden = !text;
  status.classList.toggle("error", isError);
  clearTimeout(statusTimer);
  if (text && !isError) statusTimer = setTimeout(() => (status.hidden = true), 10000);
}

// ---- sign-in (AUTH_MODE=jwt): a pasted token, or one handed back by LOGIN_URL ----

/** A random value for the trip to LOGIN_URL, kept in this tab until the browser is back. */
function newLoginState() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  const state = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  try {
    sessionStorage.setItem(LOGIN_STATE_KEY, state);
  } catch {
    // No session storage: the token that comes back will be refused, with a message.
  }
  return state;
}

/** The stored state, removed: each trip to LOGIN_URL hands back one token at most. */
function takeLoginState() {
  try {
    const state = sessionStorage.getItem(LOGIN_STATE_KEY);
    sessionStorage.removeItem(LOGIN_STATE_KEY);
    return state;
  } catch {
    return null;
  }
}

/**
 * `#access_token=...&state=...` from a login redirect, removed from the address bar and
 * history. The token counts only with the state this tab stored before it went to
 * LOGIN_URL: any site can link here with a token of its own, and would have the visitor
 * chat, unknowingly, as someone else (login CSRF).
 */
function tokenFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const value = params.get("access_token") || params.get("token");
  if (!value) return { token: null, problem: "" };
  history.replaceState(null, "", location.pathname + location.search);
  const expected = takeLoginState();
  if (!expected || params.get("state") !== expected) {
    const problem =
      "The address carried a sign-in this page did not ask for, so it was not used. " +
      "Sign in yourself.";
    return { token: null, problem };
  }
  return { token: value, problem: "" };
}

/** Who the server says the caller is, in the header. */
function showCaller(caller) {
  $("who-user").textContent = caller.user_id;
  $("who-tenant").textContent = caller.tenant_id;
  $("who").title = `User ${caller.user_id} in tenant ${caller.tenant_id}, role ${caller.role}`;
  $("who").hidden = false;
}

// Esc would close the sign-in dialog and leave a page that cannot do anything.
$("sign-in").addEventListener("cancel", (event) => event.preventDefault());

function askForToken(problem) {
  const dialog = $("sign-in");
  $("sign-in-error").textContent = problem;
  if (config.loginUrl) {
    const url = new URL(config.loginUrl, document.baseURI);
    url.searchParams.set("return_to", location.href.split("#")[0]);
    url.searchParams.set("state", newLoginState());
    $("login-link").href = url.href;
    $("login-link").hidden = false;
  }
  if (!dialog.open) dialog.showModal();
  return new Promise((resolve) => {
    $("token-form").onsubmit = (event) => {
      event.preventDefault();
      const value = $("token-input").value.trim();
      if (!value) return;
      $("token-input").value = "";
      dialog.close();
      resolve(value);
    };
  });
}

/** Until the server accepts a token; asking who it names proves it before any UI starts. */
async function signIn(api, problem = "") {
  let candidate = null;
  if (!problem) ({ token: candidate, problem } = tokenFromFragment());
  for (;;) {
    candidate = candidate || (await askForToken(problem));
    setToken(candidate);
    try {
      showCaller(await api.me());
      return;
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 401) return; // shown by the UI later
      problem = `The server refused that token: ${error.message}`;
      candidate = null;
    }
  }
}

// ---- the ChatKit element ----

function loadChatKit() {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("timed out")), CHATKIT_TIMEOUT_MS);
    const script = document.createElement("script");
    script.src = config.chatkitScriptUrl;
    script.async = true;
    script.onerror = () => {
      clearTimeout(timer);
      reject(new Error("the script did not load"));
    };
    customElements.whenDefined("openai-chatkit").then(() => {
      clearTimeout(timer);
      resolve();
    });
    document.head.append(script);
  });
}

function chatkitOptions() {
  const absolute = (path) => new URL(path, document.baseURI).href;
  return {
    api: {
      // Absolute: the element's frame lives on another origin.
      url: absolute(config.apiUrl),
      domainKey: config.domainKey,
      fetch: (input, init) => authorizedFetch(input, init),
      uploadStrategy: { type: "direct", uploadUrl: absolute(config.uploadUrl) },
    },
    theme: { colorScheme: theme },
    history: { enabled: true, showDelete: true, showRename: true },
    startScreen: { greeting: "What can I help with today?", prompts: PROMPTS },
    composer: { placeholder: "Message the assistant", attachments: { enabled: true } },
    threadItemActions: { feedback: true, retry: true },
  };
}

function mountChatKit() {
  const element = document.createElement("openai-chatkit");
  element.addEventListener("chatkit.error", (event) => {
    setStatus(`ChatKit: ${event.detail?.error?.message || "something went wrong"}`, true);
  });
  $("chatkit-root").append(element);
  $("chatkit-root").hidden = false;
  // setOptions replaces every option, so the whole set goes again on a theme change.
  const apply = () => element.setOptions(chatkitOptions());
  themeListeners.push(apply);
  apply();
}

// ---- start ----

function chosenUi() {
  const asked = new URLSearchParams(location.search).get("ui");
  if (asked === "builtin") return "builtin";
  // The page's CSP only lets the CDN script in when the server allows ChatKit.
  if (asked === "chatkit" && config.webUi !== "builtin") return "chatkit";
  return config.webUi;
}

function showSwitch(label, ui) {
  const link = $("ui-switch");
  link.textContent = label;
  link.href = `?ui=${ui}`;
  link.hidden = false;
}

async function main() {
  applyTheme(theme);
  const api = new Api(config.apiUrl, config.uploadUrl, config.meUrl);
  if (config.authMode !== "jwt") {
    api.me().then(showCaller, () => {}); // only shown; the UI says what fails later
  } else {
    await signIn(api);
    $("sign-out").hidden = false;
    $("sign-out").addEventListener("click", () => {
      setToken(null);
      location.replace(location.pathname + location.search);
    });
    let asking = false;
    whenUnauthorized(async () => {
      if (asking) return;
      asking = true;
      setToken(null);
      await signIn(api, "Your token has expired or was refused; sign in again.");
      asking = false;
    });
  }
  const ui = chosenUi();
  if (ui !== "builtin") {
    setStatus("Loading ChatKit from OpenAI's CDN…");
    try {
      await loadChatKit();
      setStatus("");
      $("ui-label").textContent = "ChatKit";
      showSwitch("Use the built-in client", "builtin");
      mountChatKit();
      return;
    } catch (error) {
      if (ui === "chatkit") {
        setStatus(`ChatKit could not load (${error.message}). WEB_UI=auto falls back.`, true);
        showSwitch("Use the built-in client", "builtin");
        return;
      }
      setStatus("ChatKit could not load (no internet?), so this is the built-in client.");
    }
  }
  const { startBuiltin } = await import("./app.js");
  startBuiltin({ api, prompts: PROMPTS });
  // Named once it runs (its modules, Markdown's included, take a moment to load): the
  // label means the client is ready for input.
  $("ui-label").textContent = "Built-in client";
  if (config.webUi !== "builtin") showSwitch("Try ChatKit", "chatkit");
}

main();
