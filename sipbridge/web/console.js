// The console: start calls, pushes and recordings, watch calls/streams/pushes/
// viewers/recordings live from /events, hang up, play a stream (the player page
// in an iframe), graphs.
//
// Every value from the server goes into the page as text (textContent), never
// as HTML: stream names and SIP reason phrases come from the outside world.

import {
  FINAL_CALL_STATUSES,
  FINAL_RECORDING_STATUSES,
  FINAL_STREAM_STATUSES,
  readEvents,
  restCall,
} from "./api.js";
import { StreamGraphs } from "./graphs.js";

const $ = (id) => document.getElementById(id);

// --------------------------------------------------------------------------- forms

const CALL_FLAGS = ["hasAudio", "hasVideo", "sipRegisterRequired"];

/** The /call/startup body: WCS field names; empty fields left out (WCS: absent). */
function callBody(form) {
  const body = {};
  for (const element of form.elements) {
    if (!element.name) continue;
    if (CALL_FLAGS.includes(element.name)) body[element.name] = element.checked;
    else if (element.value.trim() !== "") body[element.name] = element.value.trim();
  }
  return body;
}

function showResult(output, ok, text) {
  output.textContent = text;
  output.dataset.ok = ok ? "true" : "false";
}

$("call-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = $("start-call");
  button.disabled = true;
  try {
    const call = await restCall("call/startup", callBody(event.target));
    showResult($("call-result"), true, `call ${call.callId}: ${call.status}`);
    $("call-callId").value = "";
  } catch (error) {
    showResult($("call-result"), false, error.message);
  } finally {
    button.disabled = false;
  }
});

$("push-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = $("start-push");
  button.disabled = true;
  try {
    const push = await restCall("push/startup", {
      streamName: $("push-streamName").value.trim(),
      rtmpUrl: $("push-rtmpUrl").value.trim(),
      rtmpTransponderFullUrl: $("push-rtmpTransponderFullUrl").checked,
    });
    showResult($("push-result"), true, `push ${push.mediaSessionId}: ${push.status}`);
  } catch (error) {
    showResult($("push-result"), false, error.message);
  } finally {
    button.disabled = false;
  }
});

/** The /stream/startRecording body: `config` only with what the user filled in. */
function recordingBody(name, fileTemplate, rotation) {
  const body = { name };
  const config = {};
  if (fileTemplate) config.fileTemplate = fileTemplate;
  if (rotation) config.rotation = rotation;
  if (Object.keys(config).length) body.config = config;
  return body;
}

$("recording-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = $("start-recording");
  button.disabled = true;
  try {
    const recording = await restCall(
      "stream/startRecording",
      recordingBody(
        $("recording-name").value.trim(),
        $("recording-fileTemplate").value.trim(),
        $("recording-rotation").value.trim(),
      ),
    );
    showResult($("recording-result"), true, `recording of ${recording.streamName}: ${recording.status}`);
  } catch (error) {
    showResult($("recording-result"), false, error.message);
  } finally {
    button.disabled = false;
  }
});

// --------------------------------------------------------------------------- actions

async function act(method, body, output) {
  try {
    await restCall(method, body);
  } catch (error) {
    showResult(output, false, `${method}: ${error.message}`);
  }
}

function play(name) {
  const frame = $("player-frame");
  frame.src = `player?stream=${encodeURIComponent(name)}`;
  frame.hidden = false;
  frame.dataset.stream = name;
  $("stop-player").hidden = false;
}

$("stop-player").addEventListener("click", () => {
  const frame = $("player-frame");
  frame.src = "about:blank"; // the player's pagehide DELETEs its WHEP session
  frame.hidden = true;
  delete frame.dataset.stream;
  $("stop-player").hidden = true;
});

// --------------------------------------------------------------------------- tables

function button(text, className, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = text;
  element.className = className;
  element.addEventListener("click", onClick);
  return element;
}

/**
 * Make `tbody` show one row per item, keyed by `key(item)`: rows are created
 * once (`create(item)` returns {row, update}) and updated in place, so buttons
 * stay put while the user clicks them.
 */
const tableRows = new WeakMap(); // tbody -> Map(key -> {row, update})

function syncTable(tbody, items, key, create) {
  if (!tableRows.has(tbody)) tableRows.set(tbody, new Map());
  const rows = tableRows.get(tbody);
  const seen = new Set();
  for (const item of items) {
    const id = key(item);
    seen.add(id);
    let entry = rows.get(id);
    if (!entry) {
      entry = create(item);
      entry.row.dataset.key = id;
      rows.set(id, entry);
      tbody.append(entry.row);
    }
    entry.update(item);
  }
  for (const [id, entry] of rows) {
    if (!seen.has(id)) {
      entry.row.remove();
      rows.delete(id);
    }
  }
}

/** A row of `count` text cells plus one cell for buttons; `set(values)` fills the texts. */
function textRow(count, ...buttons) {
  const row = document.createElement("tr");
  const cells = [];
  for (let i = 0; i < count; i += 1) cells.push(row.insertCell());
  row.insertCell().append(...buttons);
  const set = (values) =>
    values.forEach((value, i) => {
      const text = value === null || value === undefined ? "" : String(value);
      if (cells[i].textContent !== text) cells[i].textContent = text;
    });
  return { row, set };
}

function callRow(call) {
  const hangup = button("Hang up", "hangup", () =>
    act("call/terminate", { callId: call.callId }, $("call-result")),
  );
  hangup.dataset.callId = call.callId;
  const { row, set } = textRow(7, hangup);
  return {
    row,
    update(c) {
      set([c.callId, c.callee, c.status, c.sipStatus, c.info, c.streamName, c.rtmpUrl]);
      row.dataset.status = c.status;
      hangup.disabled = FINAL_CALL_STATUSES.has(c.status);
    },
  };
}

function tracksText(tracks) {
  return tracks
    .map((t) => {
      const size = t.width && t.height ? ` ${t.width}x${t.height}` : "";
      return `${t.kind} ${t.codec || "?"}${size}`;
    })
    .join(", ");
}

// The live recording of each stream (by the stream's mediaSessionId), from the last state.
let liveRecordings = new Map();

function streamRow(stream) {
  const playButton = button("Play", "play", () => play(stream.name));
  playButton.dataset.stream = stream.name;
  const pushButton = button("Push...", "push", () => {
    $("push-streamName").value = stream.name;
    $("push-rtmpUrl").focus();
  });
  const key = { mediaSessionId: stream.mediaSessionId };
  // Start or stop recording: what it does is decided when clicked, from the last state.
  const recordButton = button("Record", "record", () =>
    liveRecordings.has(stream.mediaSessionId)
      ? act("stream/stopRecording", key, $("recording-result"))
      : act("stream/startRecording", key, $("recording-result")),
  );
  recordButton.dataset.stream = stream.name;
  const stopButton = button("Stop", "stop-stream", () =>
    act("stream/terminate", key, $("push-result")),
  );
  const { row, set } = textRow(5, playButton, pushButton, recordButton, stopButton);
  return {
    row,
    update(s) {
      const offset = s.avOffsetMs === null ? "" : `${Math.round(s.avOffsetMs)} ms`;
      set([s.name, s.status, tracksText(s.tracks), offset, s.subscribers]);
      row.dataset.status = s.status;
      const ended = FINAL_STREAM_STATUSES.has(s.status);
      const recording = liveRecordings.has(s.mediaSessionId);
      row.dataset.recording = recording ? "true" : "false";
      recordButton.textContent = recording ? "Stop recording" : "Record";
      playButton.disabled = ended;
      pushButton.disabled = ended;
      recordButton.disabled = ended && !recording;
      stopButton.disabled = ended;
    },
  };
}

function pushRow(push) {
  const stopButton = button("Stop", "stop-push", () =>
    act("push/terminate", { mediaSessionId: push.mediaSessionId }, $("push-result")),
  );
  stopButton.dataset.mediaSessionId = push.mediaSessionId;
  const { row, set } = textRow(7, stopButton);
  return {
    row,
    update(p) {
      set([
        p.mediaSessionId,
        p.streamName,
        p.targetUrl,
        p.status,
        p.info,
        p.framesSent,
        p.bytesSent,
      ]);
      row.dataset.status = p.status;
      stopButton.disabled = p.status === "STOPPED" || p.status === "FAILED";
    },
  };
}

function viewerRow() {
  const { row, set } = textRow(7);
  return {
    row,
    update(v) {
      const codecs = [v.videoCodec, v.audioCodec].filter(Boolean).join(" + ");
      set([
        v.sessionId,
        v.streamName,
        v.state,
        codecs,
        v.videoFramesSent,
        v.audioFramesSent,
        v.dropped,
      ]);
      row.dataset.state = v.state;
    },
  };
}

/** Finished files, one per line: "name (12.3 s)", or the file's error. */
function filesText(files) {
  return files
    .map((f) => (f.error ? `${f.fileName} (${f.error})` : `${f.fileName} (${f.duration.toFixed(1)} s)`))
    .join("\n");
}

function recordingRow(recording) {
  const stopButton = button("Stop", "stop-recording", () =>
    act("stream/stopRecording", { mediaSessionId: recording.mediaSessionId }, $("recording-result")),
  );
  stopButton.dataset.recordingId = recording.recordingId;
  const { row, set } = textRow(8, stopButton);
  row.cells[4].className = "files";
  return {
    row,
    update(r) {
      const final = FINAL_RECORDING_STATUSES.has(r.status);
      set([
        r.streamName,
        r.status,
        r.info,
        final ? "" : r.fileName,
        filesText(r.files),
        r.framesWritten,
        r.bytesWritten,
        r.dropped,
      ]);
      row.dataset.status = r.status;
      stopButton.disabled = final;
    },
  };
}

// --------------------------------------------------------------------------- graphs

const graphs = new Map(); // stream mediaSessionId -> StreamGraphs

function updateGraphs(streams, timeMs) {
  const live = streams.filter((s) => !FINAL_STREAM_STATUSES.has(s.status));
  const seen = new Set();
  for (const stream of live) {
    seen.add(stream.mediaSessionId);
    let graph = graphs.get(stream.mediaSessionId);
    if (!graph) {
      graph = new StreamGraphs(stream.name);
      graphs.set(stream.mediaSessionId, graph);
      $("graphs").append(graph.element);
    }
    graph.update(stream, timeMs);
  }
  for (const [id, graph] of graphs) {
    if (!seen.has(id)) {
      graph.element.remove();
      graphs.delete(id);
    }
  }
}

// --------------------------------------------------------------------------- feed

const console_ = { state: null, events: 0 };
window.sipbridgeConsole = console_;

function render(state) {
  console_.state = state;
  console_.events += 1;
  const recordings = state.recordings || [];
  liveRecordings = new Map(
    recordings
      .filter((r) => !FINAL_RECORDING_STATUSES.has(r.status))
      .map((r) => [r.mediaSessionId, r]),
  );
  syncTable($("calls"), state.calls, (c) => c.callId, callRow);
  syncTable($("streams"), state.streams, (s) => s.mediaSessionId, streamRow);
  syncTable($("pushes"), state.pushes, (p) => p.mediaSessionId, pushRow);
  syncTable($("viewers"), state.viewers, (v) => v.sessionId, viewerRow);
  syncTable($("recordings"), recordings, (r) => r.recordingId, recordingRow);
  updateGraphs(state.streams, state.time);
}

const feed = new AbortController();
addEventListener("pagehide", () => feed.abort());
readEvents(
  "events?interval=1",
  (type, data) => type === "state" && render(data),
  (status) => {
    $("events-status").textContent = `/events: ${status}`;
    $("events-status").dataset.status = status.split(":")[0];
  },
  feed.signal,
);
