// The caregiver page: log in with a caregiver token, pick a person, change their settings.
import { PROTOCOL_VERSION, decode, textMessage } from "./protocol.js";

const $ = (id) => document.getElementById(id);
let ws = null;
let pending = 0;
const state = (window.seealoudCaregiver = { ready: null, settings: null, saved: 0, errors: [] });

function status(text) { $("status").textContent = text; }

function connect(token) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  ws = new WebSocket(`${scheme}://${location.host}/ws`);
  ws.onopen = () => ws.send(textMessage("hello", { protocol: PROTOCOL_VERSION, token,
                                                   client: "seealoud-caregiver/0.1" }));
  ws.onmessage = (event) => onMessage(decode(event.data));
  ws.onclose = (event) => status(event.code === 1008 ? "The token was refused." : "Disconnected.");
}

function onMessage(msg) {
  if (msg.type === "ready") {
    if (msg.data.role !== "caregiver") {
      status("This token belongs to a user, not a caregiver.");
      ws.close();
      return;
    }
    state.ready = msg.data;
    status(`Logged in as ${msg.data.user}.`);
    $("login").hidden = true;
    $("panel").hidden = false;
    const select = $("user");
    select.replaceChildren(...msg.data.manages.map((u) => new Option(u, u)));
    if (msg.data.manages.length) load(msg.data.manages[0]);
    else status(`Logged in as ${msg.data.user}. Nobody is assigned to you yet.`);
  } else if (msg.type === "settings") {
    show(msg.data);
    if (msg.id && msg.id.startsWith("save-")) {
      state.saved += 1;
      $("result").textContent = "Saved. The change applies at once.";
    }
  } else if (msg.type === "error") {
    state.errors.push(msg.data.code);
    $("result").textContent = `Not saved: ${msg.data.message}`;
  }
}

function load(user) {
  ws.send(textMessage("settings-get", { user }, `get-${++pending}`));
}

function show({ user, values, changes }) {
  state.settings = values;
  $("user").value = user;
  $("verbosity").value = values.verbosity;
  $("quiet").checked = values.quiet;
  $("speech_rate").value = values.speech_rate;
  $("rate-out").textContent = values.speech_rate;
  $("volume").value = values.volume;
  $("language").value = values.language;
  $("voice").value = values.voice || "";
  for (const box of document.querySelectorAll("input[name=cat]")) {
    box.checked = values.hazard_categories.includes(box.value);
  }
  $("changes").replaceChildren(...(changes || []).map((c) => {
    const li = document.createElement("li");
    li.textContent = `${c.at}: ${c.by} changed ${c.key} from ${JSON.stringify(c.old)} to ${JSON.stringify(c.new)}`;
    return li;
  }));
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  connect($("token").value.trim());
  $("token").value = "";
});
$("user").addEventListener("change", (e) => load(e.target.value));
$("speech_rate").addEventListener("input", (e) => { $("rate-out").textContent = e.target.value; });
$("settings").addEventListener("submit", (e) => {
  e.preventDefault();
  const cats = [...document.querySelectorAll("input[name=cat]:checked")].map((b) => b.value);
  const values = {
    verbosity: $("verbosity").value,
    quiet: $("quiet").checked,
    speech_rate: Number($("speech_rate").value),
    volume: Number($("volume").value),
    language: $("language").value,
    voice: $("voice").value.trim() || null,
    hazard_categories: cats.length ? cats : ["all"],
  };
  $("result").textContent = "Saving…";
  ws.send(textMessage("settings-update", { user: $("user").value, values }, `save-${++pending}`));
});
