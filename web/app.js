// voice: the call page. Plain JavaScript, no build step, nothing fetched but this server.
//
// One call = one RTCPeerConnection to `voice serve`: the microphone on one audio
// transceiver (sendrecv; the reply comes back on it), and a data channel labelled
// `events` carrying the JSON events of docs/protocol.md. Signaling is a single POST of the
// complete offer (ICE gathered first, no trickle) to v1/webrtc/offer; the answer carries
// all the server's candidates.
//
// Latency. The page measures voice-to-voice itself, on the AudioContext clock:
//   reply onset (first 10 ms window of reply audio over -45 dBFS, the same threshold the
//   load tester's ear uses, measured by an AudioWorklet on the remote stream, i.e. what
//   the <audio> element is playing)
//   minus the end of the caller's speech.
// For the end of speech the server's `input.speech_stopped` alone would be late by the
// network round trip (it is sent after the audio crossed the network, then crosses back),
// so it would flatter the figure. The page's own microphone energy is exact but cannot tell
// speech from noise. So the server decides *that* the turn ended and roughly when (the
// event's arrival minus its hangover, turn_end_ms - audio_end_ms), and the page finds
// *exactly when* in its own mic levels: the last window over the noise floor at or before
// that moment. When no such window is close enough (a quiet talker under strong noise
// suppression), the server-based estimate is used and the figure is marked as such.
// With the mic-based end the page also knows the uplink: the event's arrival minus the
// hangover is when the server heard the end, so the gap to the mic's end is the audio's way
// to the server's VAD (plus the event's short way back). The server's stages are counted
// from the end of speech as the server heard it, so
//   voice-to-voice = uplink + first_audio_ms (the server's stages) + downlink and playout.
//
// For tests and the console, `window.voiceApp` exposes the state history, every event
// received, per-turn latency and the peer connection.

const params = new URLSearchParams(location.search);
const TOKEN = params.get("token");

// Real callers keep the browser's echo cancellation, noise suppression and gain control
// (without echo cancellation the reply, heard by the mic, would interrupt itself).
// `?raw=1` turns them off, for tests that feed a recording as the microphone.
const RAW_MIC = params.get("raw") === "1";

const OFFER_URL = new URL("v1/webrtc/offer", document.baseURI);
const WORKLET_URL = new URL("web/level-worklet.js", document.baseURI);

const ICE_GATHERING_TIMEOUT_MS = 5000;
const OFFER_TIMEOUT_MS = 20000;
const MEDIA_TIMEOUT_MS = 15000;
const REPLY_ONSET_DB = -45;
const MIC_MIN_SPEECH_DB = -55;
const MIC_OVER_NOISE_DB = 12;
const MIC_HISTORY_S = 30;
const MIC_END_SLACK_S = 0.05;
const MIC_END_MAX_GAP_S = 1.0;
const REPLY_QUIET_MS = 250;
const REPLY_TAIL_MAX_MS = 3000;
const INTERRUPTED_HOLD_MS = 1500;
const METER_FLOOR_DB = -60;

const STATE_LABELS = {
  idle: "Idle",
  connecting: "Connecting…",
  listening: "Listening",
  thinking: "Thinking…",
  speaking: "Speaking",
  interrupted: "Interrupted",
  error: "Error",
};

const ERROR_TITLES = {
  payment_required: "The gateway requires payment.",
  rate_limited: "The gateway is rate-limiting requests.",
  gateway_unavailable: "The gateway is unavailable.",
  gateway_timeout: "The gateway timed out.",
  gateway_unauthorized: "The gateway refused the server's credentials.",
  gateway_bad_request: "The gateway refused the request.",
  gateway_bad_response: "The gateway's answer was unreadable.",
  server_busy: "The server is busy.",
  unauthorized: "This call needs a valid token.",
  origin_not_allowed: "This page may not call that server.",
  internal_error: "Server error.",
};

const $ = (id) => document.getElementById(id);
const ui = {
  body: document.body,
  stateLabel: $("state-label"),
  call: $("call"),
  meter: $("meter"),
  meterTrack: $("meter").parentElement,
  error: $("error"),
  errorText: $("error-text"),
  errorDismiss: $("error-dismiss"),
  v2v: $("v2v"),
  v2vNote: $("v2v-note"),
  stages: $("stages"),
  legend: $("legend"),
  transcript: $("transcript"),
  hint: $("hint"),
  voice: $("voice"),
  instructions: $("instructions"),
  audio: $("remote"),
};

/** An error the caller can act on: a short title and what to do. */
class CallError extends Error {
  constructor(title, detail) {
    super(`${title} ${detail}`);
    this.title = title;
    this.detail = detail;
  }
}

/** Thrown inside a call being set up when the caller hung up meanwhile. */
const HUNG_UP = new Error("hung up");

const app = {
  state: "idle",
  states: [{ state: "idle", at: performance.now() }],
  events: [],
  turns: [],
  call: null,
  get pc() {
    return this.call && this.call.pc;
  },
};
window.voiceApp = app;

// ---------------------------------------------------------------------------------------
// State, errors and the latency panel

function setState(state) {
  if (app.state === state) return;
  app.state = state;
  app.states.push({ state, at: performance.now() });
  ui.body.dataset.state = state;
  ui.stateLabel.textContent = STATE_LABELS[state];
  const active = state !== "idle" && state !== "error";
  ui.call.textContent = active ? "Hang up" : "Connect";
  ui.call.classList.toggle("hangup", active);
}

function showError(title, detail) {
  const strong = document.createElement("b");
  strong.textContent = title;
  ui.errorText.replaceChildren(strong, " ", detail);
  ui.error.hidden = false;
}

function clearError() {
  ui.error.hidden = true;
  ui.errorText.replaceChildren();
}

function showLevel(db) {
  const fraction = Number.isFinite(db) ? (db - METER_FLOOR_DB) / -METER_FLOOR_DB : 0;
  const percent = Math.round(Math.min(1, Math.max(0, fraction)) * 100);
  ui.meter.style.width = `${percent}%`;
  ui.meterTrack.setAttribute("aria-valuenow", String(percent));
}

const ms = (value) => `${Math.round(value)} ms`;

/** The last turn's voice-to-voice and the server's stages, as a bar that sums to it. */
function showLatency(turn) {
  const t = turn.timings || {};
  const v2v = turn.voice_to_voice_ms;
  ui.v2v.textContent = v2v == null ? "–" : String(Math.round(v2v));
  ui.v2v.classList.toggle("none", v2v == null);
  ui.v2vNote.textContent =
    v2v != null && turn.speech_end === "server" ? " (speech end from the server's VAD)" : "";
  const uplink = turn.uplink_ms;
  const delivery = v2v != null && t.first_audio_ms != null ? v2v - t.first_audio_ms : null;
  const stages = [
    ["uplink", "Uplink", delivery != null ? uplink : null],
    ["vad", "VAD", t.vad_ms],
    ["asr", "ASR", t.asr_ms],
    ["llm", "LLM to 1st sentence", t.first_sentence_ms],
    ["tts", "TTS first byte", t.tts_ttfb_ms],
    ["overhead", "Overhead", t.overhead_ms],
    uplink != null && delivery != null
      ? ["delivery", "Downlink + playout", delivery - uplink]
      : ["delivery", "Network + playout", delivery],
  ].filter(([, , value]) => value != null);
  const total = stages.reduce((sum, [, , value]) => sum + Math.max(0, value), 0) || 1;
  ui.stages.replaceChildren(
    ...stages.map(([key, label, value]) => {
      const span = document.createElement("span");
      span.className = `s-${key}`;
      span.style.width = `${(Math.max(0, value) / total) * 100}%`;
      span.title = `${label}: ${ms(value)}`;
      return span;
    }),
  );
  const items = stages.map(([key, label, value]) => {
    const li = document.createElement("li");
    const swatch = document.createElement("i");
    swatch.className = `s-${key}`;
    const figure = document.createElement("b");
    figure.textContent = ms(value);
    li.append(swatch, `${label} `, figure);
    return li;
  });
  if (t.llm_ttft_ms != null) {
    const li = document.createElement("li");
    li.textContent = `LLM first token ${ms(t.llm_ttft_ms)}`;
    items.push(li);
  }
  ui.legend.replaceChildren(...items);
}

// ---------------------------------------------------------------------------------------
// The transcript

function addTurn(role, text, pending = false) {
  ui.hint.hidden = true;
  const turn = document.createElement("div");
  turn.className = `turn ${role}`;
  const bubble = document.createElement("div");
  bubble.className = "bubble";
  bubble.classList.toggle("pending", pending);
  bubble.textContent = text;
  turn.append(bubble);
  ui.transcript.append(turn);
  scrollDown();
  return { turn, bubble };
}

function addMeta(entry, ...parts) {
  let meta = entry.turn.querySelector(".meta");
  if (!meta) {
    meta = document.createElement("div");
    meta.className = "meta";
    entry.turn.append(meta);
  }
  meta.append(...parts);
  scrollDown();
}

function tag(text, className = "") {
  const span = document.createElement("span");
  span.className = `tag ${className}`.trim();
  span.textContent = text;
  return span;
}

function scrollDown() {
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

/** Show a reply cut short: what the caller heard stays, the rest is struck through. */
function markUnheard(entry, fullText, heard) {
  const unheard = document.createElement("span");
  unheard.className = "unheard";
  // The server's heard_text is a prefix of the streamed text; should it ever not be, the
  // page shows what the server says was heard and strikes out nothing it cannot place.
  unheard.textContent = fullText.startsWith(heard) ? fullText.slice(heard.length) : "";
  entry.bubble.replaceChildren(heard, unheard);
}

// ---------------------------------------------------------------------------------------
// One call

class Call {
  constructor() {
    this.closed = false;
    this.up = false; // connected: the events channel opened
    this.pc = null;
    this.dc = null;
    this.mic = null;
    this.ctx = null;
    this.sink = null;
    this.workletReady = null;
    this.timers = new Set();
    // Mic levels on the context clock, for the end of the caller's speech.
    this.micHistory = [];
    this.noiseFloor = METER_FLOOR_DB;
    this.meterShown = 0;
    this.meterDb = -Infinity;
    // The turn being answered and the reply playing.
    this.pendingUser = [];
    this.speechEnd = null; // {time, method} of the turn awaiting its reply's first audio
    this.response = null; // {id, entry, text, finished, status, v2v, speechEnd}
    this.onsetWithoutResponse = null;
    this.replyLoudAt = 0;
  }

  check() {
    if (this.closed) throw HUNG_UP;
  }

  later(fn, delay) {
    const id = setTimeout(() => {
      this.timers.delete(id);
      if (!this.closed) fn();
    }, delay);
    this.timers.add(id);
  }

  async start(session) {
    if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
      throw new CallError(
        "This page needs a secure context for the microphone.",
        "Open it over https://, or at http://127.0.0.1 or http://localhost on this machine.",
      );
    }
    if (!window.RTCPeerConnection) {
      throw new CallError("This browser cannot make WebRTC calls.", "Try a current browser.");
    }
    // Made inside the click's user gesture, so it is allowed to run.
    this.ctx = new AudioContext();
    this.sink = this.ctx.createGain();
    this.sink.gain.value = 0; // meters only: the <audio> element plays the reply
    this.sink.connect(this.ctx.destination);
    this.workletReady = this.ctx.audioWorklet.addModule(WORKLET_URL).then(
      () => true,
      () => false,
    );

    try {
      this.mic = await navigator.mediaDevices.getUserMedia({
        audio: {
          channelCount: 1,
          echoCancellation: !RAW_MIC,
          noiseSuppression: !RAW_MIC,
          autoGainControl: !RAW_MIC,
        },
      });
    } catch (err) {
      this.check();
      throw microphoneError(err);
    }
    this.check();
    this.meter(this.mic, (time, db) => this.onMicLevel(time, db));
    const track = this.mic.getAudioTracks()[0];
    track.onended = () =>
      this.lost("The microphone stopped.", "It was unplugged or taken by another application.");

    // No STUN or TURN servers: the answer carries every candidate of the server, and
    // nothing here may contact a third party. Calls across NATs need a TURN relay.
    const pc = (this.pc = new RTCPeerConnection({ iceServers: [] }));
    this.dc = pc.createDataChannel("events", { ordered: true });
    this.dc.onmessage = (e) => this.onMessage(e.data);
    this.dc.onclose = () => this.lost("The server ended the call.", "The session was closed.");
    pc.addTransceiver(track, {
      direction: "sendrecv",
      streams: [this.mic],
    });
    pc.ontrack = (e) => this.onRemoteTrack(e);
    pc.onconnectionstatechange = () => {
      // While the call is being set up, channelOpen() reports a failure (ICE failed).
      if (pc.connectionState === "failed" && this.up) {
        this.lost("The connection to the server failed.", "The audio path was lost.");
      }
    };

    await pc.setLocalDescription(await pc.createOffer());
    await this.iceGathered();
    this.check();
    const answer = await this.postOffer(session);
    this.check();
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    this.sessionId = answer.session_id;
    await this.channelOpen();
    this.check();
    this.up = true;
    setState("listening");
  }

  iceGathered() {
    const pc = this.pc;
    return new Promise((resolve) => {
      const done = () => {
        if (pc.iceGatheringState === "complete") {
          pc.removeEventListener("icegatheringstatechange", done);
          resolve();
        }
      };
      pc.addEventListener("icegatheringstatechange", done);
      done();
      // An interface that never finishes gathering must not hold the call: send what
      // candidates there are.
      setTimeout(resolve, ICE_GATHERING_TIMEOUT_MS);
    });
  }

  async postOffer(session) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), OFFER_TIMEOUT_MS);
    this.abortOffer = () => controller.abort();
    let response;
    try {
      response = await fetch(OFFER_URL, {
        method: "POST",
        headers: {
          "Content-Type": "application/json",
          // The server may require a caller token: the page passes on its own ?token=.
          ...(TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {}),
        },
        body: JSON.stringify({ sdp: this.pc.localDescription.sdp, type: "offer", session }),
        signal: controller.signal,
      });
    } catch (err) {
      this.check();
      if (err.name === "AbortError") {
        throw new CallError(
          "The server did not answer.",
          `No answer to the call from ${location.origin} within ${OFFER_TIMEOUT_MS / 1000} s.`,
        );
      }
      throw new CallError(
        "Cannot reach the server.",
        `${location.origin} does not answer. Is voice serve still running, and the network up?`,
      );
    } finally {
      clearTimeout(timer);
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      // not JSON: described below by the status alone
    }
    if (!response.ok) {
      const error = body && body.error;
      if (error && error.message) {
        const title = ERROR_TITLES[error.code] || "The server refused the call.";
        throw new CallError(title, `${error.message} (${error.code}, HTTP ${response.status})`);
      }
      if (response.status === 404) {
        throw new CallError(
          "This server does not take browser calls.",
          "It has no WebRTC endpoint (v1/webrtc/offer answered 404).",
        );
      }
      throw new CallError(
        "The server refused the call.",
        `HTTP ${response.status} ${response.statusText}`.trim(),
      );
    }
    if (!body || typeof body.sdp !== "string") {
      throw new CallError("The server's answer was unreadable.", "It carried no SDP answer.");
    }
    return body;
  }

  channelOpen() {
    const dc = this.dc;
    const pc = this.pc;
    return new Promise((resolve, reject) => {
      if (dc.readyState === "open") return resolve();
      const timer = setTimeout(() => fail(), MEDIA_TIMEOUT_MS);
      const fail = () => {
        clearTimeout(timer);
        reject(
          this.closed
            ? HUNG_UP
            : new CallError(
                "No audio connection to the server.",
                "The server accepted the call, but no media path came up (ICE failed): " +
                  "a firewall or NAT between this browser and the server may block UDP.",
              ),
        );
      };
      dc.addEventListener("open", () => {
        clearTimeout(timer);
        resolve();
      });
      pc.addEventListener("connectionstatechange", () => {
        if (pc.connectionState === "failed" || pc.connectionState === "closed") fail();
      });
    });
  }

  onRemoteTrack(event) {
    const stream = event.streams[0] || new MediaStream([event.track]);
    // Chromium feeds remote WebRTC audio to Web Audio only while an element plays it.
    ui.audio.srcObject = stream;
    ui.audio.play().catch(() => {
      showError("Reply audio is blocked by the browser.", "Click anywhere on the page to hear it.");
      document.addEventListener("click", () => ui.audio.play().then(clearError), { once: true });
    });
    this.meter(stream, (time, db) => this.onReplyLevel(time, db));
  }

  /** Run the level worklet on `stream`; `onLevel(contextTime, db)` every 10 ms. */
  async meter(stream, onLevel) {
    if (!(await this.workletReady) || this.closed) return;
    const source = this.ctx.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(this.ctx, "level-meter", {
      processorOptions: { windowMs: 10 },
    });
    node.port.onmessage = (e) => {
      if (!this.closed) onLevel(e.data.time, e.data.db);
    };
    source.connect(node);
    node.connect(this.sink); // pulled by the graph, but silent
  }

  // -------------------------------------------------------------------------------------
  // Levels

  onMicLevel(time, db) {
    // The noise floor follows quiet windows at once and rises slowly (about 2 dB/s).
    const level = Math.max(db, -100);
    this.noiseFloor = level < this.noiseFloor ? level : this.noiseFloor + 0.02;
    const voiced = db > Math.max(MIC_MIN_SPEECH_DB, this.noiseFloor + MIC_OVER_NOISE_DB);
    this.micHistory.push({ time, voiced });
    while (this.micHistory.length && this.micHistory[0].time < time - MIC_HISTORY_S) {
      this.micHistory.shift();
    }
    // The meter: fast attack, slow release, redrawn at most every 50 ms.
    this.meterDb = Math.max(db, this.meterDb - 1.5);
    if (time - this.meterShown >= 0.05) {
      this.meterShown = time;
      showLevel(this.meterDb);
    }
  }

  onReplyLevel(time, db) {
    if (db <= REPLY_ONSET_DB) return;
    this.replyLoudAt = performance.now();
    if (this.speechEnd) {
      const end = this.speechEnd;
      const v2v = { ms: (time - end.time) * 1000, method: end.method, uplinkMs: end.uplinkMs };
      this.speechEnd = null;
      if (this.response) this.response.v2v = v2v;
      else this.onsetWithoutResponse = v2v;
      // The figure is known now; the server's stages follow with response.done.
      showLatency({ voice_to_voice_ms: v2v.ms, speech_end: v2v.method, uplink_ms: null });
    }
    const r = this.response;
    if (r && !r.finished && (app.state === "thinking" || app.state === "listening")) {
      setState("speaking");
    }
  }

  /** Where the caller's speech ended, on the context clock (see the top of this file). */
  findSpeechEnd(event) {
    const now = this.ctx.currentTime;
    const hangover = Math.max(0, (event.turn_end_ms - event.audio_end_ms) / 1000);
    const latest = now - hangover + MIC_END_SLACK_S;
    for (let i = this.micHistory.length - 1; i >= 0; i--) {
      const w = this.micHistory[i];
      if (w.time > latest || !w.voiced) continue;
      if (latest - w.time <= MIC_END_MAX_GAP_S) {
        return { time: w.time, method: "mic", uplinkMs: (now - hangover - w.time) * 1000 };
      }
      break;
    }
    return { time: now - hangover, method: "server", uplinkMs: null };
  }

  // -------------------------------------------------------------------------------------
  // Events from the server (docs/protocol.md)

  onMessage(data) {
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      return;
    }
    app.events.push({ ...event, at: performance.now() });
    switch (event.type) {
      case "session.created":
        this.sessionId = event.session && event.session.id;
        break;
      case "input.speech_started":
        this.speechEnd = null;
        this.pendingUser.push(addTurn("user", "…", true));
        break;
      case "input.speech_stopped":
        this.onSpeechStopped(event);
        break;
      case "input.transcript": {
        const entry = this.pendingUser.shift() || addTurn("user", "");
        entry.bubble.classList.remove("pending");
        entry.bubble.textContent = event.text || "(nothing recognised)";
        scrollDown();
        break;
      }
      case "response.started":
        this.response = {
          id: event.response_id,
          entry: addTurn("assistant", "", true),
          text: "",
          finished: false,
          v2v: this.onsetWithoutResponse,
        };
        this.onsetWithoutResponse = null;
        if (app.state !== "speaking") setState("thinking");
        break;
      case "response.text.delta":
        if (this.response && this.response.id === event.response_id) {
          this.response.text += event.delta;
          this.response.entry.bubble.classList.remove("pending");
          this.response.entry.bubble.textContent = this.response.text;
          scrollDown();
        }
        break;
      case "response.interrupted":
        this.onInterrupted(event);
        break;
      case "response.done":
        this.onResponseDone(event);
        break;
      case "error":
        showError(
          ERROR_TITLES[event.code] || "Error.",
          `${event.message} (${event.code})`,
        );
        break;
      default:
        break;
    }
  }

  onSpeechStopped(event) {
    if (event.discarded) {
      // Too short to answer (a cough): its placeholder goes.
      const entry = this.pendingUser.pop();
      if (entry) entry.turn.remove();
      if (app.state === "interrupted") setState("listening");
      return;
    }
    if (event.cut) return; // the caller is still talking
    this.speechEnd = this.findSpeechEnd(event);
    setState("thinking");
  }

  onInterrupted(event) {
    const r = this.response;
    if (!r || r.id !== event.response_id) return;
    r.finished = true;
    r.status = "interrupted";
    if (!event.heard_text) {
      // Withdrawn before any of it was heard: it is answered with the caller's next turn.
      if (r.text) {
        markUnheard(r.entry, r.text, "");
        addMeta(r.entry, tag("withdrawn"));
      } else {
        r.entry.turn.remove();
      }
      return;
    }
    markUnheard(r.entry, r.text, event.heard_text);
    addMeta(r.entry, tag("interrupted"));
    setState("interrupted");
    this.later(() => {
      if (app.state === "interrupted") setState("listening");
    }, INTERRUPTED_HOLD_MS);
  }

  onResponseDone(event) {
    const r = this.response && this.response.id === event.response_id ? this.response : null;
    const turn = {
      response_id: event.response_id,
      status: event.status,
      text: event.text,
      timings: event.timings || {},
      voice_to_voice_ms: r && r.v2v ? r.v2v.ms : null,
      speech_end: r && r.v2v ? r.v2v.method : null,
      uplink_ms: r && r.v2v ? r.v2v.uplinkMs : null,
    };
    app.turns.push(turn);
    if (r && r.entry.turn.isConnected) {
      r.entry.bubble.classList.remove("pending");
      if (event.status === "failed") {
        if (r.text) markUnheard(r.entry, r.text, event.text || "");
        else r.entry.bubble.textContent = "(no reply)";
        r.entry.bubble.classList.toggle("pending", !r.text);
        addMeta(r.entry, tag("failed", "failed"));
      }
      const parts = [];
      if (turn.voice_to_voice_ms != null) parts.push(`${ms(turn.voice_to_voice_ms)} voice-to-voice`);
      if (turn.timings.first_audio_ms != null) {
        parts.push(`server first audio ${ms(turn.timings.first_audio_ms)}`);
      }
      if (parts.length) {
        const span = document.createElement("span");
        span.textContent = parts.join(" · ");
        addMeta(r.entry, span);
      }
    }
    if (turn.voice_to_voice_ms != null || Object.keys(turn.timings).length) showLatency(turn);
    if (r) {
      r.finished = true;
      this.response = null;
    }
    if (event.status === "interrupted") return;
    // The turn is answered (or failed before its audio): nothing more to time for it.
    this.speechEnd = null;
    if (app.state === "speaking") this.waitReplyTail(performance.now());
    else if (app.state === "thinking") setState("listening");
  }

  /** After response.done the last of the reply is still playing: listen once it is quiet. */
  waitReplyTail(since) {
    const now = performance.now();
    const quiet = now - this.replyLoudAt >= REPLY_QUIET_MS;
    if (app.state !== "speaking") return;
    if (quiet || now - since >= REPLY_TAIL_MAX_MS) {
      setState("listening");
      return;
    }
    this.later(() => this.waitReplyTail(since), 50);
  }

  // -------------------------------------------------------------------------------------
  // Ending

  /** The call broke while it was up: say so and end it. */
  lost(title, detail) {
    if (this.closed) return;
    this.close();
    showError(title, detail);
    setState("error");
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    for (const id of this.timers) clearTimeout(id);
    this.timers.clear();
    if (this.abortOffer) this.abortOffer();
    if (this.dc) {
      this.dc.onclose = null;
      this.dc.close();
    }
    if (this.pc) this.pc.close();
    if (this.mic) for (const track of this.mic.getTracks()) track.stop();
    if (this.ctx) this.ctx.close();
    ui.audio.srcObject = null;
    showLevel(-Infinity);
    for (const entry of this.pendingUser) entry.turn.remove();
  }
}

function microphoneError(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return new CallError(
        "Microphone access was denied.",
        "Allow the microphone for this site (the icon in the address bar), then press Connect again.",
      );
    case "NotFoundError":
    case "OverconstrainedError":
      return new CallError("No microphone found.", "Plug one in, then press Connect again.");
    case "NotReadableError":
    case "AbortError":
      return new CallError(
        "The microphone could not be opened.",
        "Another application may be using it; close that, then press Connect again.",
      );
    default:
      return new CallError(
        "The microphone could not be opened.",
        `${(err && err.name) || "Error"}: ${(err && err.message) || err}`,
      );
  }
}

// ---------------------------------------------------------------------------------------
// The button

function sessionSettings() {
  const session = {};
  const voice = ui.voice.value.trim();
  const instructions = ui.instructions.value.trim();
  if (voice) session.voice = voice;
  if (instructions) session.instructions = instructions;
  return session;
}

async function connect() {
  clearError();
  const call = new Call();
  app.call = call;
  setState("connecting");
  try {
    await call.start(sessionSettings());
  } catch (err) {
    if (err === HUNG_UP) return;
    call.close();
    if (err instanceof CallError) showError(err.title, err.detail);
    else showError("The call could not start.", String((err && err.message) || err));
    setState("error");
  }
}

function hangUp() {
  if (app.call) app.call.close();
  setState("idle");
}

ui.call.addEventListener("click", () => {
  if (app.state === "idle" || app.state === "error") connect();
  else hangUp();
});
ui.errorDismiss.addEventListener("click", clearError);
// Leaving the page ends the call at once, so the server frees the session.
window.addEventListener("pagehide", () => {
  if (app.call) app.call.close();
});

ui.voice.value = params.get("voice") || "";
ui.instructions.value = params.get("instructions") || "";
ui.call.disabled = false;
