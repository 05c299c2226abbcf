// The chat plugin's protocol (plugins/chat/chat.c) over WebSocket: one
// binary message is one packet, exactly as on TCP: uint16 size (the whole
// packet, this 4-byte header included), uint16 id, little-endian, then the
// payload (UTF-8 text).
"use strict";

const JOIN = 1, SAY = 2, LEAVE = 3;
const JOINED = 101, SAID = 102, LEFT = 103, PRESENCE = 104, ERROR = 199;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function packet(id, text) {
  const payload = encoder.encode(text || "");
  const bytes = new Uint8Array(4 + payload.length);
  const view = new DataView(bytes.buffer);
  view.setUint16(0, bytes.length, true);
  view.setUint16(2, id, true);
  bytes.set(payload, 4);
  return bytes;
}

function parse(buffer) {
  const view = new DataView(buffer);
  if (buffer.byteLength < 4 || view.getUint16(0, true) !== buffer.byteLength)
    return null;
  return { id: view.getUint16(2, true),
           text: decoder.decode(new Uint8Array(buffer, 4)) };
}

const $ = (id) => document.getElementById(id);
let socket = null;

function show(line, kind) {
  const div = document.createElement("div");
  div.textContent = line;
  if (kind) div.className = kind;
  const log = $("log");
  log.appendChild(div);
  log.scrollTop = log.scrollHeight;
}

function setState(text, joined) {
  $("state").textContent = text;
  document.body.dataset.state = text.split(/[ .]/)[0].toLowerCase();
  $("text").disabled = $("say-button").disabled = !joined;
}

function say(text) {
  if (socket && socket.readyState === WebSocket.OPEN && text)
    socket.send(packet(SAY, text));
}

function connect(url, name, firstLine) {
  if (socket) socket.close(1000);
  setState("Connecting to " + url + " ...", false);
  socket = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  socket.onopen = () => {
    setState("Connected.", false);
    socket.send(packet(JOIN, name));
  };
  socket.onmessage = (event) => {
    const p = typeof event.data === "string" ? null : parse(event.data);
    if (!p) {
      show("(a message that is not one packet)", "error");
      return;
    }
    switch (p.id) {
      case JOINED:
        show(p.text + " joined", "system");
        if (p.text === name) {
          setState("Joined as " + name + ".", true);
          if (firstLine) say(firstLine);
          firstLine = null;
        }
        break;
      case SAID: show(p.text); break;
      case LEFT: show(p.text + " left", "system"); break;
      case PRESENCE: $("state").title = p.text; break;
      case ERROR: show("error: " + p.text, "error"); break;
      default: show("(packet " + p.id + ")", "system");
    }
  };
  socket.onclose = (event) => {
    setState("Closed (" + event.code + (event.reason ? " " + event.reason : "") + ").", false);
  };
  socket.onerror = () => show("connection error", "error");
}

$("connect").addEventListener("submit", (event) => {
  event.preventDefault();
  connect($("url").value, $("name").value.trim(), null);
});
$("say").addEventListener("submit", (event) => {
  event.preventDefault();
  say($("text").value);
  $("text").value = "";
});
window.addEventListener("beforeunload", () => {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(packet(LEAVE));
});

const query = new URLSearchParams(location.search);
if (query.get("url")) $("url").value = query.get("url");
if (query.get("name")) {
  $("name").value = query.get("name");
  connect($("url").value, query.get("name"), query.get("say"));
}
