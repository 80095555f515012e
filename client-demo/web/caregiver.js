// The caregiver page: log in with a caregiver token, pick a person, change their settings.
import { PROTOCOL_VERSION, decode, textMessage } from "./protocol.js";

const $ = (id) => document.getElementById(id);
let ws = null;
let pending = 0;
let refresher = null;
// Kept in memory only (never in storage), so the page can reconnect by itself after a
// network drop or a server restart: a pass found it stuck on "Reload to log in again"
// with "Connected now" still shown and a Save that said "Saving…" for ever.
let loginToken = null;
let giveUp = false;
let backoff = 500;
let saveTimer = null;
const SAVE_TIMEOUT_MS = 10000;
const state = (window.seealoudCaregiver = { ready: null, settings: null, saved: 0, errors: [],
                                            connected: null, reconnects: 0 });

function status(text) { $("status").textContent = text; }
function result(text) {
  clearTimeout(saveTimer);
  $("result").textContent = text;
}

function connect(token) {
  loginToken = token;
  giveUp = false;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws`);
  ws = socket;
  socket.onopen = () => socket.send(textMessage("hello", { protocol: PROTOCOL_VERSION, token,
                                                           client: "seealoud-caregiver/0.1" }));
  socket.onmessage = (event) => onMessage(decode(event.data));
  socket.onclose = (event) => {
    clearInterval(refresher);
    if (socket !== ws) return;
    if ($("result").textContent === "Saving…") {
      result("Not saved: the connection was lost. Save again once it is back.");
    }
    // Whether the person is connected is not known while we are not.
    $("connected").textContent = "Not known while this page is disconnected.";
    $("connected").dataset.state = "down";
    if (event.code === 4001 || giveUp) {
      loginToken = null;
      if (event.code === 4001) status("The token was refused.");
      $("login").hidden = false;
      $("panel").hidden = true;
      $("token").focus();
      return;
    }
    status("Connection lost. Reconnecting…");
    setTimeout(() => { if (loginToken && ws === socket) connect(loginToken); }, backoff);
    backoff = Math.min(backoff * 2, 15000);
  };
}

let watching = false;
function onMessage(msg) {
  if (msg.type === "ready") {
    if (msg.data.role !== "caregiver") {
      status("This token belongs to a user, not a caregiver.");
      giveUp = true;
      ws.close();
      return;
    }
    const again = state.ready !== null;
    state.ready = msg.data;
    backoff = 500;
    status(again ? `Connected again as ${msg.data.user}.` : `Logged in as ${msg.data.user}.`);
    $("login").hidden = true;
    $("panel").hidden = false;
    const select = $("user");
    const chosen = select.value;
    select.replaceChildren(...msg.data.manages.map((u) => new Option(u, u)));
    if (again) {
      state.reconnects += 1;
      if (msg.data.manages.includes(chosen)) select.value = chosen;
      // a form being edited is kept: a refresh does not overwrite it
      if (select.value) load(select.value, "refresh");
    } else {
      select.focus(); // the login form is gone: put the screen reader on the panel
      if (msg.data.manages.length) load(msg.data.manages[0]);
    }
    if (!msg.data.manages.length) status(`Logged in as ${msg.data.user}. Nobody is assigned to you yet.`);
    // Keep "connected" and the change log current while the page is open.
    clearInterval(refresher);
    refresher = setInterval(() => { if (!document.hidden) load($("user").value, "refresh"); }, 10000);
    if (!watching) {
      watching = true;
      document.addEventListener("visibilitychange", () => {
        if (!document.hidden) load($("user").value, "refresh");
      });
    }
  } else if (msg.type === "settings") {
    const refresh = msg.id && msg.id.startsWith("refresh-");
    if (!refresh || !formIsDirty()) show(msg.data);
    else showStatus(msg.data);
    if (msg.id && msg.id.startsWith("save-")) {
      state.saved += 1;
      result(msg.data.connected
        ? "Saved. It applies at once."
        : "Saved. It applies when they next connect.");
    }
  } else if (msg.type === "error") {
    state.errors.push(msg.data.code);
    // A save is all or nothing: say so, or the other changes look kept (a blind-user
    // pass changed two settings, one was refused, and both were lost unsaid).
    const all = msg.data.code === "invalid-settings" ? " None of the changes were saved." : "";
    result(`Not saved: ${msg.data.message}${all}`);
  }
}

function linked() { return ws !== null && ws.readyState === WebSocket.OPEN && state.ready !== null; }

function load(user, kind = "get") {
  if (user && linked()) ws.send(textMessage("settings-get", { user }, `${kind}-${++pending}`));
}

let shownValues = null;
function formIsDirty() {
  return shownValues !== null && JSON.stringify(readForm()) !== JSON.stringify(pick(shownValues));
}

function showStatus({ connected, warnings }) {
  state.connected = connected;
  const text = connected
    ? "Connected now: changes apply at once."
    : "Not connected: changes apply when they next connect.";
  // Live regions are rewritten only when they change, so nothing is read out every 10 s.
  if ($("connected").textContent !== text) $("connected").textContent = text;
  $("connected").dataset.state = connected ? "live" : "down";
  const shown = [...$("warnings").children].map((li) => li.textContent);
  if (JSON.stringify(shown) !== JSON.stringify(warnings || [])) {
    $("warnings").replaceChildren(...(warnings || []).map((w) => {
      const li = document.createElement("li");
      li.textContent = w;
      return li;
    }));
  }
}

const LABELS = {
  verbosity: { "hazards-only": "warnings only", standard: "warnings and signs",
               detailed: "everything" },
};
const KEYS = {
  speech_rate: "speaking rate", heartbeat_s: "look-again interval", max_words: "longest utterance",
  repeat_after_s: "repeat interval", urgent_repeat_s: "urgent repeat interval",
  hazard_categories: "warnings", verbosity: "how much to say",
};
function volumeText(value) { return `${Math.round(Number(value) * 100)} %`; }

function plain(value, key) {
  if (LABELS[key] && LABELS[key][value]) return LABELS[key][value];
  if (key === "volume" && typeof value === "number") return volumeText(value);
  if (value === null || value === undefined) return "default";
  if (Array.isArray(value)) return value.join(", ");
  if (typeof value === "boolean") return value ? "on" : "off";
  return String(value);
}

function show(data) {
  const { user, values, changes, voices, languages } = data;
  state.settings = values;
  shownValues = values;
  showStatus(data);
  $("user").value = user;
  $("verbosity").value = values.verbosity;
  $("quiet").checked = values.quiet;
  $("speech_rate").value = values.speech_rate;
  $("rate-out").textContent = values.speech_rate;
  $("volume").value = values.volume;
  $("volume-out").textContent = volumeText(values.volume);
  $("volume").setAttribute("aria-valuetext", volumeText(values.volume));
  $("language").replaceChildren(...(languages || []).map((l) => new Option(l.label, l.value)));
  $("language").value = values.language;
  $("voice").replaceChildren(new Option("Default voice", ""),
                             ...(voices || []).map((v) => new Option(v.label || v.value, v.value)));
  $("voice").value = values.voice || "";
  $("heartbeat").value = values.heartbeat_s ?? "";
  $("max_words").value = values.max_words;
  $("repeat_after_s").value = values.repeat_after_s;
  $("urgent_repeat_s").value = values.urgent_repeat_s;
  $("memory").checked = values.memory;
  for (const box of document.querySelectorAll("input[name=cat]")) {
    box.checked = values.hazard_categories.includes(box.value);
  }
  $("changes").replaceChildren(...(changes || []).map((c) => {
    const li = document.createElement("li");
    const when = new Date(c.at).toLocaleString();
    const what = KEYS[c.key] || c.key.replaceAll("_", " ");
    li.textContent = `${when}: ${c.by} changed ${what} from ${plain(c.old, c.key)} to ${plain(c.new, c.key)}`;
    return li;
  }));
}

function pick(values) {
  const { verbosity, quiet, speech_rate, volume, language, voice, heartbeat_s, max_words,
          repeat_after_s, urgent_repeat_s, memory, hazard_categories } = values;
  return { verbosity, quiet, speech_rate, volume, language, voice, heartbeat_s, max_words,
           repeat_after_s, urgent_repeat_s, memory, hazard_categories };
}

function readForm() {
  const cats = [...document.querySelectorAll("input[name=cat]:checked")].map((b) => b.value);
  const heartbeat = $("heartbeat").value.trim();
  return {
    verbosity: $("verbosity").value,
    quiet: $("quiet").checked,
    speech_rate: Number($("speech_rate").value),
    volume: Number($("volume").value),
    language: $("language").value,
    voice: $("voice").value || null,
    heartbeat_s: heartbeat === "" ? null : Number(heartbeat),
    max_words: Number($("max_words").value),
    repeat_after_s: Number($("repeat_after_s").value),
    urgent_repeat_s: Number($("urgent_repeat_s").value),
    memory: $("memory").checked,
    hazard_categories: cats.length ? cats : ["all"],
  };
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  connect($("token").value.trim());
  $("token").value = "";
});
$("user").addEventListener("change", (e) => load(e.target.value));
$("speech_rate").addEventListener("input", (e) => { $("rate-out").textContent = e.target.value; });
$("volume").addEventListener("input", (e) => {
  $("volume-out").textContent = volumeText(e.target.value);
  e.target.setAttribute("aria-valuetext", volumeText(e.target.value));
});
// "All" and single categories exclude each other.
for (const box of document.querySelectorAll("input[name=cat]")) {
  box.addEventListener("change", () => {
    if (!box.checked) return;
    for (const other of document.querySelectorAll("input[name=cat]")) {
      if (other !== box && (box.value === "all" || other.value === "all")) other.checked = false;
    }
  });
}
$("settings").addEventListener("submit", (e) => {
  e.preventDefault();
  for (const field of $("settings").querySelectorAll("[aria-invalid]")) field.removeAttribute("aria-invalid");
  if (!$("settings").reportValidity()) {
    // Said by name, and marked for the screen reader: "the highlighted field" is only
    // seen (a blind-user pass). The browser's validity bubble has moved the focus there.
    const bad = $("settings").querySelector(":invalid");
    bad.setAttribute("aria-invalid", "true");
    const label = document.querySelector(`label[for="${bad.id}"]`);
    const name = label ? label.textContent.split(":")[0].trim() : bad.name;
    const range = bad.min !== "" && bad.max !== "" ? ` (${bad.min} to ${bad.max})` : "";
    result(`Not saved: "${name}" is out of range${range}.`);
    return;
  }
  const values = readForm();
  // Send only what changed, so the person hears exactly what their caregiver changed.
  const before = shownValues ? pick(shownValues) : {};
  const changed = Object.fromEntries(Object.entries(values)
    .filter(([k, v]) => JSON.stringify(before[k]) !== JSON.stringify(v)));
  if (!Object.keys(changed).length) { result("Nothing to save."); return; }
  if (!linked()) { result("Not saved: not connected. Save again once it is back."); return; }
  result("Saving…");
  ws.send(textMessage("settings-update", { user: $("user").value, values: changed }, `save-${++pending}`));
  saveTimer = setTimeout(() => {
    if ($("result").textContent === "Saving…") {
      result("Not saved: the server did not answer. Try again.");
    }
  }, SAVE_TIMEOUT_MS);
});
