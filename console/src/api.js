// Talking to corral's native API from the browser: the key (kept in sessionStorage, sent as
// `Authorization: Bearer`), problem+json errors, and execution events over SSE (fetch +
// ReadableStream, since EventSource cannot POST or send headers).

const KEY = "corral.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && problem.detail) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

function headers(extra = {}) {
  const result = { ...extra };
  const key = apiKey();
  if (key) result.authorization = `Bearer ${key}`;
  return result;
}

async function failure(response) {
  let problem = null;
  try {
    problem = await response.json();
  } catch {
    problem = null;
  }
  return new ApiError(response.status, problem);
}

export async function request(method, path, body) {
  const init = { method, headers: headers() };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

export const get = (path) => request("GET", path);
export const post = (path, body) => request("POST", path, body);
export const del = (path) => request("DELETE", path);

export function filePath(path) {
  return path.split("/").map(encodeURIComponent).join("/");
}

export async function uploadFile(sessionId, path, blob) {
  const response = await fetch(`/v1/sessions/${sessionId}/files/${filePath(path)}`, {
    method: "PUT",
    headers: headers({ "content-type": "application/octet-stream" }),
    body: blob,
  });
  if (!response.ok) throw await failure(response);
  return response.json();
}

export async function downloadFile(sessionId, path) {
  const response = await fetch(`/v1/sessions/${sessionId}/files/${filePath(path)}`, {
    headers: headers(),
  });
  if (!response.ok) throw await failure(response);
  return response.blob();
}

// Runs code, calling onEvent(name, data) for each server-sent event; resolves with the
// finished execution (the `done` event).
export async function executeStreaming(sessionId, code, onEvent) {
  const response = await fetch(`/v1/sessions/${sessionId}/executions`, {
    method: "POST",
    headers: headers({ "content-type": "application/json", accept: "text/event-stream" }),
    body: JSON.stringify({ code }),
  });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = "message";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).replace(/\r$/, "");
      buffer = buffer.slice(newline + 1);
      if (line === "") {
        if (data.length) {
          const payload = JSON.parse(data.join("\n"));
          if (event === "done") return payload;
          if (event === "problem") throw new ApiError(payload.status, payload);
          onEvent(event, payload);
        }
        event = "message";
        data = [];
      } else if (line.startsWith("event:")) {
        event = line.slice(6).trim();
      } else if (line.startsWith("data:")) {
        data.push(line.slice(5).replace(/^ /, ""));
      }
    }
  }
  throw new Error("the event stream ended before the execution finished");
}
