// Shared by the console and the player: the API token, authorised fetch(), the
// REST helper and the /events reader. Plain ES module, no dependencies.
//
// When the server has an API token ([http] api_token), the pages themselves are
// behind it: the server answers them with its login form, and POST /login sets
// the HttpOnly session cookie. fetch() sends that cookie on its own (same
// origin), so after the login no token is asked for and none is held here.
// Only if the API still answers 401/403 (the server restarted, so the cookie
// died) the page asks for the token (the #token-form of the page), keeps it in
// sessionStorage (per tab, shared with same-origin iframes such as the
// console's player, gone when the tab closes) and sends it as
// "Authorization: Bearer ...", which the server prefers to the cookie.
//
// /events is read with fetch() and a streaming reader, not EventSource, so the
// Bearer fallback works there too (EventSource cannot set a header).

const TOKEN_KEY = "sipbridge.apiToken";

/** The API token of this tab ("" when none was asked for: the cookie is used). */
export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

/** `headers` plus the Authorization header when a token was typed in (else the cookie). */
export function authHeaders(headers = {}) {
  const value = token();
  return value ? { ...headers, Authorization: `Bearer ${value}` } : { ...headers };
}

let pendingPrompt = null;

/** Show the page's #token-form and resolve once the user has submitted a token. */
export function askToken(reason) {
  if (pendingPrompt) return pendingPrompt;
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  document.getElementById("token-reason").textContent = reason;
  form.hidden = false;
  input.value = "";
  input.focus();
  pendingPrompt = new Promise((resolve) => {
    const submit = (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      form.hidden = true;
      form.removeEventListener("submit", submit);
      pendingPrompt = null;
      resolve();
    };
    form.addEventListener("submit", submit);
  });
  return pendingPrompt;
}

/** The server's error text: the JSON "error" field, else the body as text. */
export async function errorText(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body && typeof body.error === "string") return body.error;
  } catch {
    // not JSON: the text itself
  }
  return text || `HTTP ${response.status}`;
}

/** fetch() with the cookie (or a typed-in token); on 401/403 asks for the token, tries again. */
export async function apiFetch(url, options = {}) {
  for (;;) {
    const response = await fetch(url, { ...options, headers: authHeaders(options.headers) });
    if (response.status !== 401 && response.status !== 403) return response;
    const reason = await errorText(response);
    await askToken(`The server answered: ${reason}. Enter its API token.`);
  }
}

/** POST a WCS REST method ("call/startup", ...); the answer's JSON, or throws its error text. */
export async function restCall(method, body) {
  const response = await apiFetch(`rest-api/${method}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new Error(await errorText(response));
  return response.json();
}

/**
 * Read the server-sent events at `url` until `signal` aborts, reconnecting after
 * errors. `onEvent(type, data)` gets each event ("state", its parsed JSON);
 * `onStatus(text)` the connection's state ("connected", "reconnecting: ...").
 */
export async function readEvents(url, onEvent, onStatus, signal) {
  let retryMs = 2000;
  while (!signal.aborted) {
    try {
      const response = await apiFetch(url, { headers: { Accept: "text/event-stream" }, signal });
      if (!response.ok) throw new Error(await errorText(response));
      onStatus("connected");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      const parser = new EventParser((type, data, retry) => {
        if (retry !== null) retryMs = retry;
        if (type !== null) onEvent(type, JSON.parse(data));
      });
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.feed(value);
      }
      onStatus("reconnecting: the server closed the feed");
    } catch (error) {
      if (signal.aborted) return;
      onStatus(`reconnecting: ${error.message}`);
    }
    await new Promise((resolve) => setTimeout(resolve, retryMs));
  }
}

/** The text/event-stream format (HTML Living Standard §9.2.6), fed in chunks. */
class EventParser {
  constructor(dispatch) {
    this.dispatch = dispatch;
    this.buffer = "";
    this.reset();
  }

  reset() {
    this.type = "";
    this.data = [];
    this.retry = null;
  }

  feed(chunk) {
    this.buffer += chunk;
    const lines = this.buffer.split(/\r\n|\r|\n/);
    this.buffer = lines.pop(); // an incomplete last line waits for the next chunk
    for (const line of lines) this.line(line);
  }

  line(line) {
    if (line === "") {
      const type = this.data.length ? this.type || "message" : null;
      if (type !== null || this.retry !== null) {
        this.dispatch(type, this.data.join("\n"), this.retry);
      }
      this.reset();
      return;
    }
    if (line.startsWith(":")) return; // a comment: keepalive
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.type = value;
    else if (field === "data") this.data.push(value);
    else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
  }
}

/** Stream statuses after which no media will come. */
export const FINAL_STREAM_STATUSES = new Set(["UNPUBLISHED", "STOPPED", "FAILED"]);
/** Recording statuses after which no file is written any more. */
export const FINAL_RECORDING_STATUSES = new Set(["STOPPED", "FAILED"]);
/** Call statuses after which the call is over. */
export const FINAL_CALL_STATUSES = new Set(["BUSY", "FAILED", "FINISH"]);
