// The phone page: camera frames and microphone audio out, speech in. See protocol/README.md.
import { PROTOCOL_VERSION, binaryMessage, decode, textMessage } from "./protocol.js";
import { SPEECH_LANG, WORDS, phrase } from "./words.js";

const params = new URLSearchParams(location.search);
const settings = {
  fps: Number(params.get("fps") || 5),
  width: Number(params.get("width") || 640),
  height: Number(params.get("height") || 480),
  quality: Number(params.get("quality") || 0.7),
};
const HAZARD_VIBRATION = [200, 100, 200, 100, 400];

const $ = (id) => document.getElementById(id);
// The user's language (their setting, kept from the last connection): what the page
// says and shows is in it, from the first "Connecting…".
let lang = WORDS[localStorage.getItem("seealoud-language")] ? localStorage.getItem("seealoud-language") : "en";
const tr = (key, values) => phrase(lang, key, values);
const statusEl = $("status");
const said = $("said");

// Exposed for tests and diagnostics: counts only, never media.
const stats = (window.seealoud = {
  framesSent: 0, chunksReceived: 0, buffersScheduled: 0, flushes: 0,
  transcripts: [], utterances: [], state: "idle", playing: 0, audioChunksSent: 0,
  ownVoiceSilenced: 0,
  settings: null, announced: [], stops: {}, interrupts: [], questionsLost: 0,
  summaries: [], voiced: [], voiceCut: [], linkDropped: 0,
  // ?test=1 only: what reached the speaker, per utterance (samples sent vs heard).
  ear: {},
});
const TEST = params.get("test") === "1";
const currentSpeech = { id: null, priority: null };
// Utterances started and not yet stopped, and those flushed: a chunk already on its way
// when the user pressed Stop (or a warning cut in) must not start playing again.
const openUtterances = new Set();
const flushedUtterances = new Set();

let ws = null;
let ready = null;
let tokenRefused = false;
let caps = null;
let resumeToken = null;
let backoff = 500;
let cameraOn = true;
let handsFree = localStorage.getItem("seealoud-hands-free") === "1";
let talking = false;
let frameTimer = null;
let seq = 0;
let audioSeq = 0;
let video = $("preview");
let canvas = $("canvas");
let micNode = null;
let micStream = null;
let micEcho = false; // whether micStream was opened with echo cancellation
let micSource = null;
let audioCtx = null;
let nextPlayTime = 0;
const sources = new Set();
let wakeLock = null;

function token() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) {
    localStorage.setItem("seealoud-token", fromHash);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return localStorage.getItem("seealoud-token");
}

// The page's own voice, for what the server cannot say (the connection is down) or does
// not know (the camera is off, a capability changed). Without one, the polite live region.
// It never talks over SeeAloud's own speech or over the user holding a question: a
// notice waits until both are done (the connection state, when the server cannot speak
// at all, goes at once).
const voiceQueue = [];
const mustWait = () => (talking && !handsFree) || sources.size > 0;
function voice(text, { interrupt = false, now = false } = {}) {
  if (!now && mustWait()) {
    voiceQueue.push(text);
    return;
  }
  if (interrupt && stats.voiced.length) stats.voiceCut.push(stats.voiced[stats.voiced.length - 1]);
  stats.voiced.push(text);
  if ("speechSynthesis" in window) {
    if (interrupt) speechSynthesis.cancel();
    const utterance = new SpeechSynthesisUtterance(text);
    utterance.lang = SPEECH_LANG[lang] || "en";
    speechSynthesis.speak(utterance);
  }
  // A browser can have the API and no voice at all (a blind-user pass found "Connection
  // lost" said by nobody): then the live region, which a screen reader says.
  if (!("speechSynthesis" in window) || speechSynthesis.getVoices().length === 0) {
    // The same text again is not news to some screen readers: made to differ by a space.
    const region = $("notices");
    region.textContent = region.textContent === text ? `${text}\u00a0` : text;
  }
}
function voiceWaiting() {
  while (voiceQueue.length && !mustWait()) {
    voice(voiceQueue.shift(), { now: true });
  }
}

let statusTimer = null;
let statusPending = false; // the status line is about to be said, as it reads then
function setStatus(text, state) {
  const changed = stats.state !== state;
  if (statusEl.textContent !== text) statusEl.textContent = text;
  statusEl.dataset.state = state;
  stats.state = state;
  // Said once per change of state (not at every retry), and only once it has held for a
  // moment: "restarting" followed at once by "connection lost" is one change, not two.
  // Only a lost connection cuts the page's voice short; "Connected" waits its turn (it cut
  // off the notices said on connect, such as "Spoken questions are unavailable").
  if (changed && (state === "down" || state === "live") && !(state === "down" && wasDown)) {
    clearTimeout(statusTimer);
    statusPending = true;
    statusTimer = setTimeout(() => {
      statusPending = false;
      voice(statusEl.textContent, { interrupt: state === "down", now: state === "down" });
    }, 300);
  }
  if (state === "down") wasDown = true;
  if (state === "live") wasDown = false;
}
let wasDown = false;
let cutShort = false;

function say(text, priority) {
  const li = document.createElement("li");
  li.textContent = text;
  li.dataset.priority = priority;
  said.prepend(li);
  while (said.children.length > 30) said.lastChild.remove();
}

function send(msg) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(msg);
}

// --- connection --------------------------------------------------------------

// The websocket's own pings are the browser's business and never reach this page, and a
// server that hangs (a laptop asleep, a half-open Wi-Fi link) sends no close either: a
// blind-user pass froze the server for 60 s and the page said "Connected" all along while
// its frames piled up unsent. So the page pings; a ping unanswered for LINK_SILENT_MS (with
// nothing else heard since it went) means the link is dead: said, dropped, reconnected. A
// connection that does not get to "ready" within OPEN_TIMEOUT_MS is given up the same way.
const PING_MS = 4000;
const LINK_SILENT_MS = 8000;
const OPEN_TIMEOUT_MS = 10000;
let lastHeard = 0;
let lastPing = 0;
let pingWaiting = 0; // when the oldest ping not followed by anything heard went
let linkTimer = null;

function watchLink(socket) {
  clearInterval(linkTimer);
  const opened = performance.now();
  lastHeard = lastPing = opened;
  pingWaiting = 0;
  linkTimer = setInterval(() => {
    if (socket !== ws) return clearInterval(linkTimer);
    const now = performance.now();
    if (!ready) {
      if (now - opened > OPEN_TIMEOUT_MS) abandon(socket);
      return;
    }
    if (pingWaiting && lastHeard < pingWaiting && now - pingWaiting > LINK_SILENT_MS) {
      abandon(socket);
      return;
    }
    if (now - lastPing >= PING_MS && socket.readyState === WebSocket.OPEN) {
      lastPing = now;
      if (!pingWaiting || lastHeard >= pingWaiting) pingWaiting = now;
      socket.send(textMessage("ping", { t: Math.round(now) }));
    }
  }, 1000);
}

// A dead socket's close can take minutes to come: its handlers are taken off and the page
// goes on as if it had closed now.
function abandon(socket) {
  clearInterval(linkTimer);
  stats.linkDropped += 1;
  socket.onclose = socket.onmessage = socket.onopen = null;
  try { socket.close(); } catch { /* already closing */ }
  closed({ code: 1006 });
}

function connect() {
  const t = token();
  if (!t) {
    $("login").hidden = false;
    setStatus(tr("enter_token"), "down");
    $("token").focus();
    return;
  }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  stats.connects = (stats.connects || 0) + 1;
  const socket = new WebSocket(`${scheme}://${location.host}/ws`);
  ws = socket;
  ws.binaryType = "arraybuffer";
  if (stats.state !== "down") setStatus(tr("connecting"), "connecting");
  ws.onopen = () => {
    const hello = { protocol: PROTOCOL_VERSION, token: t, client: "seealoud-web/0.1",
                    capabilities: ["speech-out", "vibrate"] };
    if (resumeToken) hello.resume = resumeToken;
    socket.send(textMessage("hello", hello));
  };
  ws.onmessage = (event) => {
    lastHeard = performance.now();
    onMessage(decode(event.data));
  };
  ws.onclose = closed;
  watchLink(socket);
}

function closed(event) {
  clearInterval(linkTimer);
  stopFrames();
  ready = null;
  openUtterances.clear(); // a resumed session starts its utterances afresh
  flushedUtterances.clear();
  // Only a refused token (error auth-failed, close 4001) is forgotten; a slow network,
  // a rate limit or a malformed hello leaves it alone: reconnect and try again.
  if (event.code === 4001 || tokenRefused) {
    tokenRefused = false;
    const refused = tr("token_refused");
    setStatus(refused, "down");
    clearTimeout(statusTimer); // said here, once, every time (also when already down)
    statusPending = false;
    voice(refused, { interrupt: true, now: true });
    localStorage.removeItem("seealoud-token");
    $("controls").hidden = true; // they would do nothing now: only the token field is offered
    $("login").hidden = false;
    $("token").setAttribute("aria-invalid", "true");
    $("token").focus();
    return;
  }
  // After a "bye" the status already says why (said once the state has held a moment).
  if (!serverRestarting) setStatus(tr("lost"), "down");
  clearTimeout(reconnectTimer);
  reconnectTimer = setTimeout(connect, backoff);
  // At most 4 s between tries: a blind-user pass waited 11 s after the server was back.
  backoff = Math.min(backoff * 2, RECONNECT_MAX_MS);
}
const RECONNECT_MAX_MS = 4000;
let reconnectTimer = null;
let serverRestarting = false;
// The network is back (Wi-Fi rejoined, out of the lift): try now, not at the next timer.
window.addEventListener("online", () => {
  if (ready || !token() || (ws && ws.readyState === WebSocket.CONNECTING)) return;
  clearTimeout(reconnectTimer);
  backoff = 500;
  connect();
});

function onMessage(msg) {
  switch (msg.type) {
    case "ready": {
      ready = msg.data;
      resumeToken = msg.data.resume;
      backoff = 500;
      serverRestarting = false;
      const first = caps === null;
      caps = msg.data.capabilities;
      showCapabilityStatus(caps);
      // Vision is in the status line, which is said as the page comes back "live". A
      // restarted server loading its model again is not news to a user told it is off:
      // "unavailable" once it has loaded would be said a second time (a blind-user pass).
      const vision = capabilityState(caps, "vision");
      if (first || vision !== "loading") told.vision = vision;
      // A restarted server loading again after "ready": the status line says "still
      // loading", so "ready" is news again when it comes (a blind-user pass was never told).
      else if (told.vision === "ready") told.vision = "loading";
      // Short sentences, said once: on the first connect, or when they changed from what
      // the user was last told (a restarted server loads its models again: "ready" once
      // more is not news, "unavailable" after "still loading" is).
      if (first) {
        for (const key of CAPABILITIES) {
          told[key] = capabilityState(caps, key);
          if (key === "vision" || told[key] === "ready" || told[key] === "loading") continue;
          announce(told[key]);
        }
      } else {
        announceCapabilityChanges(caps);
      }
      const signedIn = !$("login").hidden; // the token was just typed in
      $("controls").hidden = false;
      $("login").hidden = true;
      // the form that had the focus is gone: the screen reader goes to Talk, not the page
      if (signedIn) $("talk").focus();
      if (handsFree || msg.data.listening === "hands-free") {
        handsFree = true;
        showHandsFree();
        // A page reloaded with hands-free on has its microphone open again: said, so
        // nobody is listened to unawares (a blind-user pass). A reconnect goes on as before.
        if (first) announce(tr("hands_free_on"));
        // Listening goes on after a reconnect; a warning waiting to be said is not cut.
        startMic("hands-free", { silence: false })
          .catch((err) => announce(tr("mic_unavailable", { why: err.message })));
      }
      startFrames();
      requestWakeLock();
      send(textMessage("settings-get", {})); // the language the page speaks in
      // A question sent into a link that had died unnoticed got no answer and no word (a
      // blind-user pass froze the server): the user is told to ask again.
      if (!first && unanswered.size) {
        stats.questionsLost += unanswered.size;
        announce(tr("question_lost"));
      }
      unanswered.clear();
      break;
    }
    case "observation":
      if (msg.id) unanswered.delete(msg.id);
      break;
    case "capabilities": {
      caps = msg.data;
      announceCapabilityChanges(caps);
      break;
    }
    case "speech-start":
      // A typed "read this" or "go on" is answered in speech, not by an observation.
      if (ANSWERING.has(msg.data.priority)) unanswered.clear();
      speechStarts += 1;
      openUtterances.add(msg.data.utterance);
      flushedUtterances.delete(msg.data.utterance);
      stats.utterances.push({ id: msg.data.utterance, priority: msg.data.priority, text: msg.data.text });
      say(msg.data.text, msg.data.priority);
      currentSpeech.id = msg.data.utterance;
      currentSpeech.priority = msg.data.priority;
      showNow(msg.data.text, msg.data.priority);
      if (msg.data.priority === "hazard" && navigator.vibrate) navigator.vibrate(HAZARD_VIBRATION);
      break;
    case "speech-chunk":
      stats.chunksReceived += 1;
      if (flushedUtterances.has(msg.data.utterance)) break;
      play(msg.payload, msg.data.rate, msg.data.utterance);
      break;
    case "speech-stop":
      stats.stops[msg.data.utterance] = msg.data.reason;
      openUtterances.delete(msg.data.utterance);
      flushedUtterances.delete(msg.data.utterance);
      if (currentSpeech.id === msg.data.utterance && msg.data.reason !== "done") {
        cutShort = true; // the label says it was stopped, not "Last said"
        speaking(false);
      }
      break;
    case "interrupt":
      if (msg.id) unanswered.delete(msg.id); // a typed "stop"
      flush();
      stats.interrupts.push({ reason: msg.data.reason || "", at: stats.flushedAt });
      break;
    case "transcript":
      stats.transcripts.push(msg.data.text);
      if (msg.data.text) say(tr("you_asked", { text: msg.data.text }), "transcript");
      break;
    case "error":
      if (msg.data.ref) unanswered.delete(msg.data.ref);
      if (msg.data.code === "auth-failed") tokenRefused = true;
      if (msg.data.fatal) setStatus(msg.data.message, "down");
      else if (msg.data.code === "capability-unavailable") {
        refusedCapability(inLanguage(msg.data.message));
      }
      break;
    case "settings":
      stats.settings = msg.data.values;
      setLanguage(msg.data.values.language);
      // A caregiver's change says what changed, once; the reply to our own settings-get
      // has an empty summary and is not announced.
      // The server also says it, in the user's own voice (so it is in the list already).
      if (msg.data.summary) {
        stats.summaries.push(msg.data.summary);
        stats.announced.push(msg.data.summary);
      }
      break;
    case "bye":
      serverRestarting = true;
      setStatus(tr("restarting"), "down");
      break;
    default:
      break;
  }
}

// --- camera --------------------------------------------------------------------

async function startCamera() {
  if (video.srcObject) return;
  const stream = await navigator.mediaDevices.getUserMedia({
    // Only the size is asked for, not the shape: asking for 640x480 made a camera held
    // upright crop its picture to a square. frameSize() scales what comes.
    video: { facingMode: "environment", width: { ideal: Math.max(settings.width, settings.height) } },
    audio: false,
  });
  video.srcObject = stream;
  await video.play();
}

function startFrames() {
  stopFrames();
  if (!cameraOn || document.hidden || !ready) return;
  startCamera().then(() => {
    frameTimer = setInterval(sendFrame, 1000 / settings.fps);
  }).catch((err) => say(tr("camera_unavailable", { why: err.message }), "notice"));
}

function stopFrames() {
  if (frameTimer) clearInterval(frameTimer);
  frameTimer = null;
}

// The camera's own shape, its long side at most the configured one: a phone held
// upright sends portrait frames (the server notices the turn), never a stretched picture.
function frameSize() {
  const vw = video.videoWidth, vh = video.videoHeight;
  if (!vw || !vh) return [settings.width, settings.height];
  const scale = Math.min(1, Math.max(settings.width, settings.height) / Math.max(vw, vh));
  return [Math.max(1, Math.round(vw * scale)), Math.max(1, Math.round(vh * scale))];
}

function sendFrame() {
  if (!ready || !ws || ws.readyState !== WebSocket.OPEN || video.readyState < 2) return;
  if (ws.bufferedAmount > 256 * 1024) return; // the network is behind: skip, never queue
  const [width, height] = frameSize();
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  const ts = Date.now();
  canvas.toBlob(async (blob) => {
    if (!blob) return;
    const bytes = new Uint8Array(await blob.arrayBuffer());
    send(binaryMessage({ type: "camera-frame", seq: seq++, ts, width: canvas.width,
                         height: canvas.height, format: "jpeg" }, bytes));
    stats.framesSent += 1;
  }, "image/jpeg", settings.quality);
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden) stopFrames();
  else { startFrames(); requestWakeLock(); }
});

// --- speech out ------------------------------------------------------------------

function ensureAudio() {
  if (!audioCtx) {
    audioCtx = new AudioContext();
    if (TEST) earLoaded = audioCtx.audioWorklet.addModule("/static/ear-worklet.js");
  }
  if (audioCtx.state === "suspended") audioCtx.resume();
  return audioCtx;
}

function play(payload, rate, utterance) {
  const ctx = ensureAudio();
  const samples = new Int16Array(payload.buffer.slice(payload.byteOffset,
                                                      payload.byteOffset + payload.byteLength));
  // ?test=1: a second channel marks "this utterance is playing" for the test's ear.
  const buffer = ctx.createBuffer(TEST ? 2 : 1, samples.length, rate);
  const data = buffer.getChannelData(0);
  for (let i = 0; i < samples.length; i++) data[i] = samples[i] / 32768;
  if (TEST) buffer.getChannelData(1).fill(1);
  const source = ctx.createBufferSource();
  source.buffer = buffer;
  source.connect(TEST ? earFor(utterance, samples.length, rate) : ctx.destination);
  // SeeAloud's own voice wins over the page's: a page notice said just before it ("Connected.
  // Watching." 20 ms before "The camera sees nothing", a blind-user pass) was two voices
  // at once. The notice is in the list; a cut one is said again when the audio is done.
  if (!sources.size && "speechSynthesis" in window && speechSynthesis.speaking) {
    speechSynthesis.cancel();
    const cut = stats.voiced[stats.voiced.length - 1];
    stats.voiceCut.push(cut);
    if (cut !== undefined) voiceQueue.unshift(cut);
  }
  speaking(true);
  const start = Math.max(ctx.currentTime + 0.02, nextPlayTime);
  source.start(start);
  nextPlayTime = start + buffer.duration;
  sources.add(source);
  stats.buffersScheduled += 1;
  stats.playing = sources.size;
  source.onended = () => {
    sources.delete(source);
    stats.playing = sources.size;
    if (!sources.size) { speaking(false); voiceWaiting(); }
  };
}

// ?test=1 only: each utterance plays through its own recorder node (ear-worklet.js), so a
// test compares what the server sent with what reached the speakers, on the audio clock.
let earLoaded = null;
const ears = new Map();
function earFor(utterance, count, rate) {
  const ctx = audioCtx;
  const record = (stats.ear[utterance] ||= {
    sent: 0, rate, ctxRate: ctx.sampleRate, played: 0, loud: 0, lastPlayed: -1, lastLoud: -1,
    idle: true,
  });
  record.sent += count;
  let node = ears.get(utterance);
  if (!node) {
    node = new AudioWorkletNode(ctx, "ear", {
      numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
      channelCount: 2, channelCountMode: "explicit", channelInterpretation: "discrete" });
    node.port.onmessage = (event) => Object.assign(record, event.data);
    node.connect(ctx.destination);
    ears.set(utterance, node);
  }
  return node;
}

function flush() {
  for (const s of sources) { try { s.stop(); } catch (_) { /* already stopped */ } }
  sources.clear();
  for (const id of openUtterances) flushedUtterances.add(id);
  stats.playing = 0;
  stats.flushes += 1;
  if (audioCtx) stats.flushedAt = audioCtx.currentTime; // audio clock, as the ear's times
  if (audioCtx) nextPlayTime = audioCtx.currentTime;
  speaking(false);
}

// --- microphone -----------------------------------------------------------------

async function startMic(mode, { silence = true } = {}) {
  const ctx = ensureAudio();
  if (silence) { // the user is about to talk: stop talking over them
    flush();
    send(textMessage("interrupt", { reason: "user-talking" }));
  }
  send(textMessage("audio-start", { rate: 16000, format: "pcm16", channels: 1, mode }));
  talking = true; // chunks flow as soon as the microphone is up (the first time takes a moment)
  // The browser's voice processing is for calls; it smears speech for the recogniser. For
  // push-to-talk playback is flushed before listening, so there is no echo to cancel; in
  // hands-free the microphone stays open while SeeAloud speaks, and without echo
  // cancellation it would hear SeeAloud's own voice as a question.
  const cancelEcho = mode === "hands-free";
  if (micNode && micEcho !== cancelEcho) {
    // All of the old capture goes: a node left connected to its source kept posting
    // silence beside the new one's audio, and every question after a switch was lost
    // (a blind-user pass).
    micNode.port.onmessage = null;
    micSource.disconnect();
    micNode.disconnect();
    micStream.getTracks().forEach((t) => t.stop());
    micNode = micSource = null;
  }
  if (!micNode) {
    micEcho = cancelEcho;
    micStream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: cancelEcho, noiseSuppression: false,
               autoGainControl: false } });
    stats.micEchoCancellation = micStream.getAudioTracks()[0].getSettings().echoCancellation;
    await ctx.audioWorklet.addModule("/static/capture-worklet.js");
    const source = (micSource = ctx.createMediaStreamSource(micStream));
    micNode = new AudioWorkletNode(ctx, "pcm-capture", { processorOptions: { rate: 16000 } });
    stats.captureNodes = (stats.captureNodes || 0) + 1;
    micNode.port.onmessage = (event) => {
      if (!talking) return;
      // Hands-free hears the room while the page's own voice says a notice ("Hands-free
      // on", "Connection lost"), which echo cancellation may not know of: that would be
      // taken for a question. Silence goes in its place, so the timing stays true.
      const own = handsFree && "speechSynthesis" in window && speechSynthesis.speaking;
      const pcm = own ? new Uint8Array(event.data.byteLength) : new Uint8Array(event.data);
      if (own) stats.ownVoiceSilenced += 1;
      send(binaryMessage({ type: "audio-chunk", seq: audioSeq++, ts: Date.now(), rate: 16000 },
                         pcm));
      stats.audioChunksSent += 1;
    };
    source.connect(micNode);
  }
}

function stopMic() {
  if (!talking) return;
  talking = false;
  send(textMessage("audio-stop", {}));
  voiceWaiting();
}

const talkButton = $("talk");
const HOLD_MS = 400;
let pressedAt = 0;
let holdTimer = null;
let heldDown = false;
let skipClick = false;

function beginTalk() {
  if (talking || handsFree) return;
  if (!connected()) return; // nothing would hear it
  talkButton.classList.add("talking");
  talkButton.setAttribute("aria-pressed", "true");
  talkButton.textContent = tr("talk_send");
  startMic("push-to-talk").catch((err) => announce(tr("mic_unavailable", { why: err.message })));
}
function endTalk() {
  if (handsFree || !talking) return;
  talkButton.classList.remove("talking");
  talkButton.setAttribute("aria-pressed", "false");
  talkButton.textContent = tr("talk");
  stopMic();
}
// A tap, Enter, or a screen reader's double-tap (all a click) starts talking and the next
// one sends. Holding the button also works: release after a long press sends.
talkButton.addEventListener("click", () => {
  if (skipClick) { skipClick = false; return; }
  if (talking) endTalk(); else beginTalk();
});
talkButton.addEventListener("pointerdown", () => {
  pressedAt = performance.now();
  heldDown = false;
  holdTimer = setTimeout(() => {
    heldDown = true;
    beginTalk();
  }, HOLD_MS);
});
function releaseHold() {
  clearTimeout(holdTimer);
  if (heldDown) { skipClick = true; endTalk(); }
  heldDown = false;
}
talkButton.addEventListener("pointerup", releaseHold);
talkButton.addEventListener("pointercancel", releaseHold);
// Space or a volume key held anywhere on the page (not while typing) is push-to-talk.
document.addEventListener("keydown", (e) => {
  if ((e.code === "Space" || e.code === "AudioVolumeUp") && !e.repeat &&
      !["INPUT", "BUTTON", "SELECT"].includes(document.activeElement.tagName)) {
    e.preventDefault();
    beginTalk();
  }
});
document.addEventListener("keyup", (e) => {
  if ((e.code === "Space" || e.code === "AudioVolumeUp") &&
      !["INPUT", "BUTTON", "SELECT"].includes(document.activeElement.tagName)) endTalk();
});

$("stop").addEventListener("click", () => {
  if (audioCtx) stats.stopClickedAt = audioCtx.currentTime; // audio clock, as the ear's times
  flush();
  send(textMessage("interrupt", { reason: "tap" }));
});

function showHandsFree() {
  const button = $("handsfree");
  button.setAttribute("aria-pressed", String(handsFree));
  // The word on/off is for the eyes; a screen reader hears aria-pressed.
  button.querySelector(".state").textContent = tr(`hands_free_state_${handsFree ? "on" : "off"}`);
  localStorage.setItem("seealoud-hands-free", handsFree ? "1" : "0");
  $("talk-help").textContent = handsFree ? tr("talk_help_hands_free") : tr("talk_help");
  talkButton.disabled = handsFree;
  talkButton.textContent = handsFree ? tr("listening") : tr("talk");
  talkButton.classList.toggle("listening", handsFree);
}

$("handsfree").addEventListener("click", async () => {
  handsFree = !handsFree;
  showHandsFree();
  // Offline, the mode is kept and listening starts once connected; said, as the other
  // controls say it (a pass turned it on while down and heard nothing), and as Camera
  // on/off is said (a pass heard nothing either way: the button's look is for the eyes).
  if (!handsFree) { talking = false; send(textMessage("audio-stop", {})); }
  // Said after the microphone is closed: said while it was still open, "off" waited for
  // the end of a talk that was over, and was never said (a second blind-user pass).
  if (handsFree && !ready) announce(tr("hands_free_offline"));
  else announce(handsFree ? tr("hands_free_on") : tr("hands_free_off"));
  // Turning it on does not cut SeeAloud off: hands-free never talks over by itself.
  if (handsFree && ready) await startMic("hands-free", { silence: false });
});

$("read").addEventListener("click", () => ask(tr("read_question"), { intent: "read" }));

// --- what the user is told -------------------------------------------------------

// The page's own notices (the server's voice does not say these): said by the page's
// voice, added to the list, and kept for tests.
function announce(text) {
  stats.announced.push(text);
  say(text, "notice");
  voice(text);
}
const announcedOnce = new Set();
function announceOnce(text) {
  if (announcedOnce.has(text)) return;
  announcedOnce.add(text);
  announce(text);
}
// The server says in its own voice why it cannot see or read (in the user's language);
// the page's voice at the same moment was two sentences at once (a blind-user pass). So
// the page says a refusal only when no speech from the server follows it (a spoken
// question refused, or a server that cannot speak).
let speechStarts = 0;
const REFUSAL_SPOKEN_MS = 1500;
function refusedCapability(text) {
  const before = speechStarts;
  if (!caps || !caps.speech_out) return announceOnce(text);
  setTimeout(() => { if (speechStarts === before) announceOnce(text); }, REFUSAL_SPOKEN_MS);
}
// One short sentence per capability that changed; the server's reason when it has one
// (in English: another language gets the page's own sentence, loading or off).
const CAPABILITIES = ["vision", "speech_in", "speech_out", "text_reading"];
const capabilityReady = (key) => tr(`ready_${key}`);
function capabilityWhy(c, key) {
  const why = (c.reasons || {})[key];
  if (why && lang === "en") return why;
  return tr(why && why.includes("loading") ? `loading_${key}` : `off_${key}`);
}
// What the user was last told of each capability: "ready", "loading", or why it is off.
const told = {};
function capabilityState(c, key) {
  if (c[key]) return "ready";
  const why = (c.reasons || {})[key] || "";
  return why.includes("loading") ? "loading" : capabilityWhy(c, key);
}
// The server's English refusals, in the page's own words for another language.
function inLanguage(serverText) {
  if (lang === "en") return serverText;
  for (const [key, text] of Object.entries(WORDS.en)) {
    if (text === serverText) return tr(key);
  }
  return serverText;
}
function announceCapabilityChanges(after) {
  for (const key of CAPABILITIES) {
    const now = capabilityState(after, key);
    if (now === "loading" || now === told[key]) continue; // loading: said when it is ready
    told[key] = now;
    if (key === "vision" && statusPending) continue; // the status line is about to say it
    announce(now === "ready" ? capabilityReady(key) : now);
  }
  showCapabilityStatus(after);
}
function showCapabilityStatus(c) {
  // A restarted server loading its model again: the status keeps what the user was told
  // ("unavailable"), until it changes; "still loading" and then "unavailable" again was
  // two sentences of no news (a blind-user pass). "Ready" is said when it comes.
  const before = told.vision;
  const reloading = capabilityState(c, "vision") === "loading" && before && before !== "ready"
    && before !== "loading";
  const why = reloading ? before : capabilityWhy(c, "vision");
  if (!cameraOn) setStatus(tr("connected_camera_off"), "live");
  else setStatus(c.vision ? tr("connected_watching") : tr("connected_why", { why }), "live");
}
// The line at the top: what is being said right now (the list below has the history).
function showNow(text, priority) {
  const now = $("now");
  now.textContent = text;
  now.dataset.priority = priority || "";
  speaking(document.body.classList.contains("is-speaking"));
}
// The label above it: a filled "Speaking" while audio plays, "Last said" after.
function speaking(on) {
  document.body.classList.toggle("is-speaking", on);
  const label = $("speaking");
  label.dataset.on = String(on);
  if (on) cutShort = false;
  label.textContent = on ? tr("speaking")
    : !$("now").textContent ? tr("nothing_yet") : cutShort ? tr("stopped") : tr("last_said");
}

$("camera").addEventListener("click", (e) => {
  cameraOn = !cameraOn;
  e.currentTarget.setAttribute("aria-pressed", String(cameraOn));
  e.currentTarget.querySelector(".state").textContent = tr(`camera_state_${cameraOn ? "on" : "off"}`);
  if (cameraOn) startFrames(); else stopFrames();
  if (caps) showCapabilityStatus(caps);
  announce(cameraOn ? tr("camera_on") : tr("camera_off"));
});

// The two buttons ask about the view: with the camera off there is nothing to ask about,
// and the page says so at once (in the words the server uses). A typed question goes to
// the server, which answers it or says the same.
function ask(text, extra = {}, { needsCamera = true } = {}) {
  ensureAudio();
  if (!connected()) return false;
  if (needsCamera && !cameraOn) {
    announce(tr("camera_off_ask"));
    return false;
  }
  // read and go on are answered by speech; a question by the observation with its id
  const id = extra.intent ? undefined : `q${++questionCount}`;
  if (id) unanswered.add(id);
  send(textMessage("question", { text, ...extra }, id));
  return true;
}
// Questions sent and not yet answered (by the observation or error with their id, or
// by speech that answers: a reading, a notice such as "Reading.").
const unanswered = new Set();
const ANSWERING = new Set(["answer", "reading", "notice"]);
let questionCount = 0;
// A question, typed or spoken, while the connection is down went nowhere, and nothing was
// said (a blind-user pass): the page says at once that it was not sent.
function connected() {
  if (ready && ws && ws.readyState === WebSocket.OPEN) return true;
  stats.notSent = (stats.notSent || 0) + 1;
  announce(tr("not_sent"));
  return false;
}

$("describe").addEventListener("click", () => ask(tr("describe_question")));

$("ask").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("question").value.trim();
  if (!text) return;
  if (!ask(text, {}, { needsCamera: false })) return; // kept in the field, to send again
  $("question").value = "";
  say(tr("you_asked", { text }), "transcript");
});

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  localStorage.setItem("seealoud-token", $("token").value.trim());
  $("token").value = "";
  $("token").removeAttribute("aria-invalid");
  connect();
});

async function requestWakeLock() {
  try {
    if ("wakeLock" in navigator && !wakeLock) {
      wakeLock = await navigator.wakeLock.request("screen");
      wakeLock.addEventListener("release", () => { wakeLock = null; });
    }
  } catch (_) { /* not allowed now (page hidden or no permission) */ }
}

// The page in the user's language: what it shows (the words, the page's lang, so a screen
// reader pronounces them right) and, from here on, what it says.
function setLanguage(code) {
  if (!WORDS[code]) return;
  if (code !== lang) {
    lang = code;
    localStorage.setItem("seealoud-language", code);
  }
  applyLabels();
}
function applyLabels() {
  document.documentElement.lang = lang;
  if (!ready && !stats.connects) statusEl.textContent = tr("not_connected");
  document.querySelector('label[for="token"]').textContent = tr("token_label");
  $("login").querySelector("button").textContent = tr("connect");
  $("controls").setAttribute("aria-label", tr("controls"));
  $("stop").textContent = tr("stop");
  $("stop").setAttribute("aria-label", tr("stop_label"));
  $("handsfree").firstChild.textContent = `${tr("hands_free")} `;
  $("camera").firstChild.textContent = `${tr("camera")} `;
  $("camera").querySelector(".state").textContent = tr(`camera_state_${cameraOn ? "on" : "off"}`);
  $("describe").textContent = tr("describe");
  $("read").textContent = tr("read");
  document.querySelector('label[for="question"]').textContent = tr("question_label");
  $("ask").querySelector("button").textContent = tr("ask");
  $("said-title").textContent = tr("said_title");
  showHandsFree();
  if (talking && !handsFree) talkButton.textContent = tr("talk_send");
  speaking(document.body.classList.contains("is-speaking"));
  if (ready && caps) showCapabilityStatus(caps);
}
applyLabels();

// The first touch anywhere unlocks audio on phones that need a gesture.
document.addEventListener("pointerdown", ensureAudio, { once: true });
if (TEST) { ensureAudio(); earLoaded.then(connect); } else connect();
