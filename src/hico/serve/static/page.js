// The hico serve page: plain JavaScript against the server's own OpenAI-style API (no build step, no CDN).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { url: null, model: null, history: [], busy: false };

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
