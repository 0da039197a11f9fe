// The hico serve page: plain JavaScript against the server's own OpenAI-style API (no build step, no CDN).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { url: null, model: null, history: [], busy: false, mode: "file" };
// The live session: its socket, the camera, the frame timer, the answer being streamed.
const live = { ws: null, stream: null, timer: null, fps: 1, t0: null, step: 0, reply: null, unsent: 0 };
const FRAME_ERRORS = ["invalid_frame", "frame_too_large", "invalid_frame_time", "not_started"];

function headers(json) {
  const h = {};
  const key = $("key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function failure(response) {
  try {
    const body = await response.json();
    return (body.error && body.error.message) || response.statusText;
  } catch (e) {
    return response.status + " " + response.statusText;
  }
}

function status(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "muted";
}

function sampling() {
  const options = {};
  for (const name of ["num_frames", "fps", "max_frames", "start", "end"]) {
    const value = $(name).value.trim();
    if (value !== "") options[name] = name.endsWith("frames") ? parseInt(value, 10) : parseFloat(value);
  }
  return options;
}

async function loadModel() {
  const response = await fetch("/v1/models", { headers: headers(false) });
  if (!response.ok) { status(await failure(response), true); return; }
  state.model = (await response.json()).data[0].id;
  $("model-name").textContent = state.model;
  status("");
}

async function upload(file) {
  status("uploading " + file.name + " ...");
  const form = new FormData();
  form.append("file", file);
  form.append("purpose", "vision");
  const response = await fetch("/v1/files", { method: "POST", headers: headers(false), body: form });
  if (!response.ok) { status(await failure(response), true); return; }
  const stored = await response.json();
  await useVideo(stored.hico.url, stored.hico.kind);
}

async function useVideo(url, kind) {
  state.url = url;
  state.kind = kind || (url.startsWith("data:image") ? "image" : "video");
  state.history = [];
  $("history").textContent = "";
  await preview();
}

async function preview() {
  $("strip").textContent = "";
  if (state.kind === "image") { $("plan").textContent = "An image: one clip of 64 visual tokens."; return; }
  $("plan").textContent = "Planning ...";
  const response = await fetch("/v1/hico/preview", {
    method: "POST", headers: headers(true), body: JSON.stringify({ url: state.url, hico: sampling() }) });
  if (!response.ok) {
    const message = await failure(response);
    if (message.includes("it is an image")) { state.kind = "image"; return preview(); }
    $("plan").textContent = message; $("plan").className = "error"; return;
  }
  const plan = await response.json();
  $("plan").className = "";
  $("plan").textContent = `${plan.frames} frames of ${plan.duration.toFixed(2)} s -> ${plan.visual_tokens} visual ` +
    `tokens (${plan.width}x${plan.height}, ${plan.fps.toFixed(2)} fps). ${plan.time_msg}`;
  for (const thumb of plan.thumbnails) {
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.src = thumb.image;
    img.alt = "frame " + thumb.index;
    const caption = document.createElement("figcaption");
    caption.textContent = thumb.time.toFixed(1) + " s";
    figure.append(img, caption);
    $("strip").append(figure);
  }
}

function bubble(role, text) {
  const div = document.createElement("div");
  div.className = "turn " + role;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  div.append(body);
  $("history").append(div);
  $("history").scrollTop = $("history").scrollHeight;
  return div;
}

function messages(question) {
  const part = state.kind === "image"
    ? { type: "image_url", image_url: { url: state.url } }
    : { type: "video_url", video_url: { url: state.url } };
  const list = [];
  state.history.forEach(([asked, answered], i) => {
    list.push({ role: "user", content: i === 0 ? [part, { type: "text", text: asked }] : asked });
    list.push({ role: "assistant", content: answered });
  });
  list.push({ role: "user", content: list.length ? question : [part, { type: "text", text: question }] });
  return list;
}

async function ask(question) {
  if (state.mode === "live") { askLive(question); return; }
  if (!state.url) { status("Choose or upload a video first.", true); return; }
  if (!state.model) await loadModel();
  state.busy = true;
  $("send").disabled = true;
  bubble("user", question);
  const reply = bubble("assistant", "");
  const text = reply.querySelector(".text");
  const started = performance.now();
  let first = null, usage = null, answer = "", plan = null;
  status("waiting for the model ...");
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(true),
      body: JSON.stringify({ model: state.model, messages: messages(question), stream: true,
                             stream_options: { include_usage: true }, hico: sampling() }) });
    if (!response.ok) throw new Error(await failure(response));
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, cut).trim();
        buffer = buffer.slice(cut + 2);
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") continue;
        const event = JSON.parse(data);
        if (event.error) throw new Error(event.error.message);
        if (event.usage) usage = event.usage;
        if (event.hico) plan = event.hico;
        const piece = event.choices && event.choices[0] && event.choices[0].delta.content;
        if (piece) {
          if (first === null) first = performance.now();
          answer += piece;
          text.textContent = answer;
        }
      }
    }
    state.history.push([question, answer]);
    const meta = document.createElement("span");
    meta.className = "meta";
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    const ttft = first === null ? "-" : ((first - started) / 1000).toFixed(2);
    meta.textContent = `${seconds} s (first token ${ttft} s)` + (usage ? `, ${usage.prompt_tokens} prompt tokens ` +
      `(${usage.prompt_tokens_details.visual_tokens} visual), ${usage.completion_tokens} answer tokens` : "") +
      (plan ? `, video ${plan.cache === "encoded" ? "encoded" : "reused"}` : "");
    reply.append(meta);
    status("");
  } catch (error) {
    reply.classList.add("error");
    text.textContent = error.message;
    status("");
  } finally {
    state.busy = false;
    $("send").disabled = false;
  }
}

// --- Live mode: the webcam streamed to /v1/live as JPEG frames at the session's fps ---------------------------

function setMode(mode) {
  state.mode = mode;
  $("mode-file").classList.toggle("active", mode === "file");
  $("mode-live").classList.toggle("active", mode === "live");
  $("file-mode").hidden = mode !== "file";
  $("live-mode").hidden = mode !== "live";
  $("question").placeholder = mode === "live" ? "Ask about what the camera shows" : "Ask about the video";
  state.history = [];
  $("history").textContent = "";
  if (mode === "file") stopLive();
}

function liveStatus(text, isError) {
  $("live-state").textContent = text;
  $("live-state").className = isError ? "error" : "muted";
}

function showLiveState(s) {
  const frames = s.frames || {};
  $("live-state").dataset.frames = s.num_frames;
  $("live-state").dataset.seconds = s.seconds;
  liveStatus(`${s.seconds.toFixed(1)} s seen, ${s.num_frames} frames, ${s.kept_tokens} kept visual tokens, ` +
    `${(s.memory_bytes / 1048576).toFixed(1)} MB` + (frames.dropped ? `, ${frames.dropped} frames dropped` : "") +
    (live.unsent ? `, ${live.unsent} not sent` : ""));
}

async function startLive() {
  stopLive();
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    liveStatus("This browser gives no camera here (it needs https:// or localhost).", true); return;
  }
  if (!state.model) await loadModel();
  const fps = parseFloat($("live-fps").value) || 1;
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (error) {
    liveStatus("No camera: " + error.message, true); return;
  }
  live.stream = stream;
  $("live-video").srcObject = stream;
  $("live-video").play().catch(() => {});
  state.history = [];
  $("history").textContent = "";
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/live");
  live.ws = ws;
  $("live-start").disabled = true;
  $("live-stop").disabled = false;
  liveStatus("Connecting ...");
  ws.onopen = () => {
    const start = { type: "start", fps };
    const key = $("key").value.trim();
    if (key) start.api_key = key;
    const budget = $("live-budget").value.trim();
    if (budget) start.budget_tokens = parseInt(budget, 10);
    ws.send(JSON.stringify(start));
  };
  ws.onmessage = (event) => { if (live.ws === ws) onLiveMessage(JSON.parse(event.data)); };
  ws.onclose = (event) => {
    if (live.ws !== ws) return;
    const reason = event.code === 1000 || event.code === 1005 ? "" : ` (${event.code} ${event.reason})`;
    if (live.reply) finishLiveReply("the session closed" + reason);
    stopLive();
    if (reason && $("live-state").className !== "error") liveStatus("The live session closed" + reason, true);
  };
}

function stopLive() {
  clearTimeout(live.timer);
  live.timer = null;
  if (live.ws) { const ws = live.ws; live.ws = null; ws.close(1000); }
  if (live.stream) { live.stream.getTracks().forEach((track) => track.stop()); live.stream = null; }
  $("live-video").srcObject = null;
  $("live-start").disabled = false;
  $("live-stop").disabled = true;
}

function onLiveMessage(message) {
  if (message.type === "started") {
    live.fps = message.options.fps;
    live.t0 = null;
    live.step = 0;
    live.unsent = 0;
    liveStatus("Streaming ...");
    sendFrame();
  } else if (message.type === "state") {
    showLiveState(message);
  } else if (message.type === "token" && live.reply) {
    if (live.reply.first === null) live.reply.first = performance.now();
    live.reply.answer += message.text;
    live.reply.text.textContent = live.reply.answer;
  } else if (message.type === "answer" && live.reply) {
    const reply = live.reply;
    live.reply = null;
    reply.text.textContent = message.text;
    state.history.push([reply.question, message.text]);
    const seconds = ((performance.now() - reply.started) / 1000).toFixed(2);
    const ttft = reply.first === null ? "-" : ((reply.first - reply.started) / 1000).toFixed(2);
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = `${seconds} s (first token ${ttft} s), ${message.state.seconds.toFixed(1)} s of stream seen, ` +
      `${message.usage.prompt_tokens_details.visual_tokens} visual tokens, ` +
      `${message.usage.completion_tokens} answer tokens`;
    reply.div.append(meta);
    showLiveState(message.state);
    endAsking();
  } else if (message.type === "error") {
    if (live.reply && !FRAME_ERRORS.includes(message.code)) finishLiveReply(message.message);
    else liveStatus(message.message, true);
  }
}

// One frame now, the next at the next step of the session's fps, 2 ms late: a timer fires at or after its time,
// so the server (which takes the first frame at or after each step) takes every frame sent.
function sendFrame() {
  const ws = live.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  const now = performance.now();
  if (live.t0 === null) live.t0 = now;
  const t = (now - live.t0) / 1000;
  const video = $("live-video");
  if (video.videoWidth && ws.bufferedAmount < (4 << 20)) {
    const scale = Math.min(1, 640 / Math.max(video.videoWidth, video.videoHeight));
    const canvas = $("live-canvas");
    canvas.width = Math.round(video.videoWidth * scale);
    canvas.height = Math.round(video.videoHeight * scale);
    canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
    canvas.toBlob((jpeg) => {
      if (!jpeg || live.ws !== ws || ws.readyState !== WebSocket.OPEN) return;
      const header = new DataView(new ArrayBuffer(8));
      header.setFloat64(0, t, true);  // the frame's time in seconds, little-endian, then the JPEG
      ws.send(new Blob([header.buffer, jpeg]));
    }, "image/jpeg", 0.9);
  } else if (video.videoWidth) {
    live.unsent += 1;  // the socket still holds megabytes unsent: a slow link skips frames here
  }
  live.step = Math.floor(t * live.fps + 1e-6) + 1;
  live.timer = setTimeout(sendFrame, Math.max(0, live.t0 + live.step * 1000 / live.fps + 2 - performance.now()));
}

function askLive(question) {
  if (!live.ws || live.ws.readyState !== WebSocket.OPEN) { status("Start the camera first.", true); return; }
  state.busy = true;
  $("send").disabled = true;
  bubble("user", question);
  const div = bubble("assistant", "");
  live.reply = { div, text: div.querySelector(".text"), question, answer: "", started: performance.now(),
                 first: null };
  live.ws.send(JSON.stringify({ type: "ask", question, history: state.history }));
}

function finishLiveReply(message) {
  const reply = live.reply;
  live.reply = null;
  reply.div.classList.add("error");
  reply.text.textContent = message;
  endAsking();
}

function endAsking() {
  state.busy = false;
  $("send").disabled = false;
  status("");
}

$("mode-file").addEventListener("click", () => setMode("file"));
$("mode-live").addEventListener("click", () => setMode("live"));
$("live-start").addEventListener("click", startLive);
$("live-stop").addEventListener("click", () => { stopLive(); liveStatus("Camera off."); });
$("file").addEventListener("change", (event) => { if (event.target.files[0]) upload(event.target.files[0]); });
$("use-url").addEventListener("click", () => { const url = $("url").value.trim(); if (url) useVideo(url); });
$("replan").addEventListener("click", () => { if (state.url) preview(); });
$("clear").addEventListener("click", () => { state.history = []; $("history").textContent = ""; });
$("key").addEventListener("change", () => { sessionStorage.setItem("hico-key", $("key").value); loadModel(); });
$("ask").addEventListener("submit", (event) => {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question || state.busy) return;
  $("question").value = "";
  ask(question);
});
$("key").value = sessionStorage.getItem("hico-key") || "";
loadModel();
