// Talking to POST /chatkit: JSON requests, server-sent event streams and uploads.
// The bearer token lives in this module's memory only, never in storage.

let token = null;
let onUnauthorized = () => {};

export function setToken(value) {
  token = value;
}

export function hasToken() {
  return token !== null;
}

export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

/** A failed request, with the message the server chose for people to read. */
export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** fetch() with the bearer token added; a 401 asks for a new token. */
export async function authorizedFetch(input, init = {}) {
  // ChatKit may hand over a Request: keep its headers unless `init` replaces them.
  const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
  if (token) headers.set("Authorization", `Bearer ${token}`);
  const response = await fetch(input, { ...init, headers });
  if (response.status === 401) onUnauthorized();
  return response;
}

export class Api {
  constructor(apiUrl, uploadUrl, meUrl) {
    this.apiUrl = new URL(apiUrl, document.baseURI).href;
    this.uploadUrl = new URL(uploadUrl, document.baseURI).href;
    this.meUrl = new URL(meUrl, document.baseURI).href;
  }

  /** The caller as the server sees it: `{user_id, tenant_id, role}`. */
  async me() {
    const response = await authorizedFetch(this.meUrl);
    if (!response.ok) throw await errorOf(response);
    return response.json();
  }

  /** A non-streaming request (threads.list, items.list, threads.update, ...). */
  async call(type, params) {
    const response = await this.post(type, params);
    return response.json();
  }

  /** A streaming request: `onEvent` gets each event as it arrives. */
  async stream(type, params, onEvent, signal) {
    const response = await this.post(type, params, signal);
    if (!(response.headers.get("content-type") || "").startsWith("text/event-stream")) {
      throw new ApiError(response.status, "The server did not answer with a stream");
    }
    await readEvents(response.body, onEvent);
  }

  /** Direct upload: multipart `file`, answered with the ChatKit attachment. */
  async upload(file, signal) {
    const form = new FormData();
    form.append("file", file, file.name);
    const response = await authorizedFetch(this.uploadUrl, { method: "POST", body: form, signal });
    if (response.status === 404 || response.status === 405) {
      throw new ApiError(response.status, "This server does not accept uploads");
    }
    if (!response.ok) throw await errorOf(response);
    return response.json();
  }

  async post(type, params, signal) {
    const response = await authorizedFetch(this.apiUrl, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ type, params }),
      signal,
    });
    if (!response.ok) throw await errorOf(response);
    return response;
  }
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not our JSON envelope (a proxy's error page): the status text will do.
  }
  let message = (body && (body.message || body.error?.message)) || response.statusText;
  const wait = response.headers.get("Retry-After");
  if (response.status === 429 && wait) message += ` Try again in ${wait} s.`;
  return new ApiError(response.status, message || `HTTP ${response.status}`, body?.error?.code);
}

/**
 * Server-sent events: frames end with a blank line; `data:` lines carry JSON.
 * Comment lines (`: keep-alive`) and other fields are skipped.
 */
export async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    // Joined before normalising, so a CRLF split across two chunks still counts once.
    buffer = (buffer + value).replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = frame
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""));
      if (data.length) onEvent(JSON.parse(data.join("\n")));
    }
  }
}
