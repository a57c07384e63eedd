// The player: plays /player?stream=NAME by WHEP (RFC 9725), without trickle ICE.
//
// It offers recvonly audio + video, waits for ICE gathering to complete (the
// server does not take PATCHed candidates), POSTs the offer to whep/NAME,
// applies the 201's SDP answer and keeps the Location (the WHEP session) to
// DELETE it when the page goes away. It watches /events to tell "stream ended"
// from a network failure. window.sipbridgePlayer exposes {pc, state, ...} so
// tests can call pc.getStats().

import { apiFetch, authHeaders, errorText, FINAL_STREAM_STATUSES, readEvents } from "./api.js";

const GATHERING_TIMEOUT_MS = 5000;

const streamName = new URLSearchParams(location.search).get("stream") || "";
const video = document.getElementById("video");
const stateView = document.getElementById("state");
const statsView = document.getElementById("stats");
const unmute = document.getElementById("unmute");
const feed = new AbortController();

const player = {
  streamName,
  pc: null,
  state: "idle", // idle | connecting | playing | ended | error
  message: "",
  sessionUrl: null,
  sessionId: null,
};
window.sipbridgePlayer = player;

function setState(state, message) {
  if (player.state === "ended" || (player.state === "error" && state !== "ended")) return;
  player.state = state;
  player.message = message;
  stateView.textContent = message;
  stateView.dataset.state = state;
  document.body.dataset.state = state;
}

function waitForGathering(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== "complete") return;
      pc.removeEventListener("icegatheringstatechange", done);
      clearTimeout(timer);
      resolve();
    };
    // Send what was gathered so far rather than wait forever on a slow interface.
    const timer = setTimeout(resolve, GATHERING_TIMEOUT_MS);
    pc.addEventListener("icegatheringstatechange", done);
  });
}

async function play() {
  if (!streamName) {
    setState("error", "no stream given: open player?stream=NAME");
    return;
  }
  document.title = `${streamName} - sipbridge player`;
  setState("connecting", `connecting to ${streamName}...`);
  const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
  player.pc = pc;
  const media = new MediaStream();
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  pc.addEventListener("track", (event) => {
    media.addTrack(event.track);
    // Only now: a <video> with a source delays the page's load event until it plays.
    if (!video.srcObject) video.srcObject = media;
  });
  pc.addEventListener("connectionstatechange", () => {
    if (pc.connectionState === "failed") setState("error", "connection failed (ICE or DTLS)");
    else if (pc.connectionState === "disconnected") setState("connecting", "connection lost, waiting...");
  });
  await pc.setLocalDescription(await pc.createOffer());
  await waitForGathering(pc);
  const response = await apiFetch(`whep/${encodeURIComponent(streamName)}`, {
    method: "POST",
    headers: { "Content-Type": "application/sdp" },
    body: pc.localDescription.sdp,
  });
  if (response.status !== 201) throw new Error(await errorText(response));
  const location = response.headers.get("Location");
  if (!location) throw new Error("the server answered without a Location");
  player.sessionUrl = new URL(location, response.url).href;
  player.sessionId = decodeURIComponent(player.sessionUrl.split("/").pop());
  await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
  setState("connecting", `connected to ${streamName}, waiting for media...`);
}

function watchStream(state) {
  const mine = state.streams.filter((s) => s.name === streamName);
  const live = mine.some((s) => !FINAL_STREAM_STATUSES.has(s.status));
  const sessionAlive = state.viewers.some((v) => v.sessionId === player.sessionId);
  if (mine.length && !live) stop("ended", "stream ended");
  else if (player.sessionId && !sessionAlive) {
    const message =
      player.state === "playing"
        ? "stream ended (the server closed the session)"
        : "the server closed the session before media flowed";
    stop(player.state === "playing" ? "ended" : "error", message);
  }
}

async function showStats() {
  if (!player.pc || player.state === "ended") return;
  const parts = [];
  for (const report of (await player.pc.getStats()).values()) {
    if (report.type !== "inbound-rtp") continue;
    if (report.kind === "video") {
      const fps = report.framesPerSecond ? ` ${Math.round(report.framesPerSecond)} fps` : "";
      parts.push(`video ${report.frameWidth || 0}x${report.frameHeight || 0}${fps}`);
    }
    parts.push(`${report.kind} lost ${report.packetsLost ?? 0}`);
  }
  statsView.textContent = parts.join(" | ");
}

function deleteSession() {
  if (!player.sessionUrl) return;
  const url = player.sessionUrl;
  player.sessionUrl = null;
  // keepalive: the request outlives the page it was sent from.
  fetch(url, { method: "DELETE", headers: authHeaders(), keepalive: true }).catch(() => {});
}

function stop(state, message) {
  setState(state, message);
  deleteSession();
  feed.abort();
  if (player.pc) player.pc.close();
}

video.addEventListener("playing", () => setState("playing", `playing ${streamName}`));
unmute.addEventListener("click", () => {
  video.muted = !video.muted;
  unmute.textContent = video.muted ? "Unmute" : "Mute";
  if (!video.muted) video.play().catch(() => {});
});
addEventListener("pagehide", () => {
  deleteSession();
  feed.abort();
  if (player.pc) player.pc.close();
});
setInterval(() => showStats().catch(() => {}), 1000);

play().then(
  () => {
    if (player.state === "error") return;
    readEvents(
      "events?interval=1",
      (type, data) => type === "state" && watchStream(data),
      () => {},
      feed.signal,
    );
  },
  (error) => stop("error", error.message),
);
