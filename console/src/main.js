// corral's web console: sessions (live), one session (REPL with streaming output, rich
// results, history, files, interrupt/restart/close), API keys, and the server (/v1/info and
// live metrics). Hash routes; every call goes to the native API with the key the login form
// took (none needed while the server is in open mode).

import "./style.css";
import * as api from "./api.js";
import * as render from "./render.js";
import { parseMetrics, Series } from "./charts.js";

const { el } = render;
const app = document.getElementById("app");
let stopPage = () => {};

function every(milliseconds, action) {
  action();
  const timer = setInterval(action, milliseconds);
  return () => clearInterval(timer);
}

function notice(text, kind = "error") {
  return el("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

function page(title, ...children) {
  app.replaceChildren(el("h1", {}, title), ...children);
}

async function guarded(action, where) {
  try {
    return await action();
  } catch (error) {
    if (error instanceof api.ApiError && error.status === 401) {
      location.hash = "#/login";
      return undefined;
    }
    (where || app).prepend(notice(error.message));
    return undefined;
  }
}

// -- login -----------------------------------------------------------------------------------

function loginPage() {
  const input = el("input", { type: "password", name: "key", placeholder: "corral_…", autocomplete: "off", required: true, "aria-label": "API key" });
  const form = el(
    "form",
    {
      class: "login",
      onsubmit: async (event) => {
        event.preventDefault();
        api.setApiKey(input.value.trim());
        try {
          await api.get("/v1/sessions?limit=1");
          location.hash = "#/sessions";
        } catch (error) {
          api.setApiKey("");
          form.querySelector(".notice")?.remove();
          form.append(notice(error.status === 401 ? "That key was refused." : error.message));
        }
      },
    },
    el("label", {}, "API key", input),
    el("button", { type: "submit" }, "Sign in"),
  );
  page("Sign in", el("p", {}, "This server requires an API key. It is kept in this tab only."), form);
  input.focus();
}

// -- sessions --------------------------------------------------------------------------------

function sessionsPage() {
  const body = el("tbody");
  const showEnded = el("input", { type: "checkbox", id: "show-ended" });
  const table = el(
    "table",
    { class: "sessions" },
    el("thead", {}, el("tr", {}, ["Session", "State", "Runtime", "Tenant", "Expires in", "Memory limit", "Executions", "Created"].map((name) => el("th", {}, name)))),
    body,
  );
  let sessions = [];
  const draw = () => {
    const shown = sessions.filter((session) => showEnded.checked || !["closed", "dead"].includes(session.state));
    body.replaceChildren(
      ...shown.map((session) =>
        el(
          "tr",
          { "data-session": session.id },
          el("td", {}, el("a", { href: `#/sessions/${session.id}` }, session.name || session.id.slice(0, 8)), el("small", {}, ` ${session.id}`)),
          el("td", {}, el("span", { class: `state ${session.state}` }, session.state)),
          el("td", {}, session.runtime),
          el("td", {}, session.tenant),
          el("td", { class: "countdown" }, render.countdown(session.expires_at)),
          el("td", {}, render.bytes(session.limits.memory_bytes)),
          el("td", {}, String(session.execution_count)),
          el("td", {}, new Date(session.created_at).toLocaleString()),
        ),
      ),
    );
    if (!shown.length) body.append(el("tr", {}, el("td", { colspan: 8, class: "empty" }, "No sessions yet.")));
  };
  showEnded.addEventListener("change", draw);
  const name = el("input", { placeholder: "name (optional)", "aria-label": "Session name" });
  const create = el(
    "form",
    {
      class: "inline",
      onsubmit: async (event) => {
        event.preventDefault();
        const session = await guarded(() => api.post("/v1/sessions", { name: name.value || undefined }));
        if (session) location.hash = `#/sessions/${session.id}`;
      },
    },
    name,
    el("button", { type: "submit", id: "new-session" }, "New session"),
  );
  page("Sessions", create, el("label", { class: "toggle" }, showEnded, " show ended"), table);
  const refresh = async () => {
    const list = await guarded(() => api.get("/v1/sessions?limit=500"));
    if (list) {
      sessions = list.sessions;
      draw();
    }
  };
  const stopRefresh = every(2000, refresh);
  const stopTick = every(1000, draw);
  return () => {
    stopRefresh();
    stopTick();
  };
}

// -- one session -----------------------------------------------------------------------------

function sessionPage(id) {
  const summary = el("dl", { class: "summary" });
  const transcript = el("div", { class: "transcript", "aria-live": "polite" });
  const code = el("textarea", { id: "code", rows: 6, spellcheck: "false", placeholder: "print('hello')  — Shift+Enter runs", "aria-label": "Code" });
  const run = el("button", { id: "run", type: "submit" }, "Run");
  const files = el("tbody");
  let session = null;

  const showSummary = () => {
    if (!session) return;
    const rows = [
      ["State", el("span", { class: `state ${session.state}` }, session.state)],
      ["Runtime", session.runtime],
      ["Tenant", session.tenant],
      ["Executions", String(session.execution_count)],
      ["Memory used", session.memory ? render.bytes(session.memory.pss_bytes) : "—"],
      ["Memory limit", render.bytes(session.limits.memory_bytes)],
      ["Expires in", render.countdown(session.expires_at)],
    ];
    summary.replaceChildren(...rows.flatMap(([label, value]) => [el("dt", {}, label), el("dd", {}, value)]));
  };

  const cell = (count, source) => {
    const output = el("div", { class: "output" });
    const node = el("section", { class: "cell" }, el("div", { class: "prompt" }, `In [${count ?? " "}]:`), el("pre", { class: "source" }, source), output);
    transcript.append(node);
    return { node, output };
  };

  const loadHistory = async () => {
    const after = Math.max(0, session.execution_count - 50);
    const page = await guarded(() => api.get(`/v1/sessions/${id}/executions?limit=100&after=${after}`));
    if (!page) return;
    transcript.replaceChildren();
    for (const record of page.executions) {
      const { output } = cell(record.execution_count, record.code);
      output.append(...render.execution(record));
    }
  };

  const loadFiles = async () => {
    const listing = await guarded(() => api.get(`/v1/sessions/${id}/files`), filesBox);
    if (!listing) return;
    files.replaceChildren(
      ...listing.entries.map((entry) =>
        el(
          "tr",
          {},
          el("td", {}, entry.type === "directory" ? `${entry.name}/` : entry.name),
          el("td", {}, render.bytes(entry.size)),
          el("td", {}, new Date(entry.modified).toLocaleString()),
          el(
            "td",
            {},
            entry.type === "file"
              ? el("button", { class: "quiet", onclick: () => download(entry.name) }, "Download")
              : "",
          ),
        ),
      ),
    );
    if (!listing.entries.length) files.append(el("tr", {}, el("td", { colspan: 4, class: "empty" }, "The workspace is empty.")));
  };

  const download = async (name) => {
    const blob = await guarded(() => api.downloadFile(id, name), filesBox);
    if (!blob) return;
    const link = el("a", { href: URL.createObjectURL(blob), download: name });
    document.body.append(link);
    link.click();
    link.remove();
  };

  const execute = async () => {
    const source = code.value;
    if (!source.trim()) return;
    run.disabled = true;
    const { node, output } = cell(null, source);
    node.classList.add("running");
    try {
      const done = await api.executeStreaming(id, source, (event, data) => {
        if (event === "stream") {
          const last = output.lastElementChild;
          if (last && last.matches(`pre.stream.${data.name}`)) last.textContent += data.text;
          else output.append(render.stream(data.name, data.text));
        } else if (event === "display" || event === "result") {
          output.append(render.bundle(data.data));
        }
      });
      node.querySelector(".prompt").textContent = `In [${done.execution_count}]:`;
      if (done.error) output.append(render.error(done.error));
      node.dataset.status = done.status;
      code.value = "";
    } catch (error) {
      if (error instanceof api.ApiError && error.status === 401) location.hash = "#/login";
      output.append(notice(error.message));
    } finally {
      node.classList.remove("running");
      run.disabled = false;
      refreshSession();
      loadFiles();
    }
  };

  code.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.shiftKey || event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      execute();
    }
  });

  const action = (label, path, method = "POST", after) =>
    el(
      "button",
      {
        class: "quiet",
        id: `session-${label.toLowerCase()}`,
        onclick: async () => {
          const updated = await guarded(() => api.request(method, path));
          if (updated) {
            session = updated;
            showSummary();
            if (after) after();
          }
        },
      },
      label,
    );

  const upload = el("input", {
    type: "file",
    id: "upload",
    "aria-label": "Upload a file",
    onchange: async () => {
      for (const file of upload.files) await guarded(() => api.uploadFile(id, file.name, file), filesBox);
      upload.value = "";
      loadFiles();
    },
  });
  const filesBox = el(
    "section",
    { class: "files" },
    el("h2", {}, "Files"),
    el("label", { class: "upload" }, "Upload ", upload),
    el("table", {}, el("thead", {}, el("tr", {}, ["Name", "Size", "Modified", ""].map((name) => el("th", {}, name)))), files),
  );

  page(
    "Session",
    el("p", { class: "id" }, id),
    summary,
    el(
      "div",
      { class: "actions" },
      action("Interrupt", `/v1/sessions/${id}/interrupt`),
      action("Restart", `/v1/sessions/${id}/restart`),
      action("Close", `/v1/sessions/${id}`, "DELETE", () => (location.hash = "#/sessions")),
    ),
    el("div", { class: "columns" }, el("div", { class: "repl" }, transcript, el("form", { class: "editor", onsubmit: (event) => { event.preventDefault(); execute(); } }, code, run)), filesBox),
  );

  const refreshSession = async () => {
    const updated = await guarded(() => api.get(`/v1/sessions/${id}`));
    if (updated) {
      session = updated;
      showSummary();
    }
  };
  (async () => {
    await refreshSession();
    if (session) {
      await loadHistory();
      await loadFiles();
    }
    code.focus();
  })();
  const stopTick = every(1000, showSummary);
  const stopRefresh = setInterval(refreshSession, 3000);
  return () => {
    stopTick();
    clearInterval(stopRefresh);
  };
}

// -- keys ------------------------------------------------------------------------------------

function keysPage() {
  const body = el("tbody");
  const issued = el("div", { class: "issued" });
  const scope = el("select", { name: "scope", "aria-label": "Scope" }, ["admin", "tenant", "session"].map((value) => el("option", { value }, value)));
  const tenant = el("input", { name: "tenant", placeholder: "tenant", "aria-label": "Tenant" });
  const sessionId = el("input", { name: "session_id", placeholder: "session id", "aria-label": "Session id" });
  const name = el("input", { name: "name", placeholder: "label", "aria-label": "Label" });
  const load = async () => {
    const list = await guarded(() => api.get("/v1/keys"));
    if (!list) return;
    body.replaceChildren(
      ...list.keys.map((key) =>
        el(
          "tr",
          { "data-key": key.id },
          el("td", {}, key.id),
          el("td", {}, key.name || ""),
          el("td", {}, key.scope),
          el("td", {}, key.tenant || ""),
          el("td", {}, new Date(key.created_at).toLocaleString()),
          el("td", {}, key.revoked_at ? `revoked ${new Date(key.revoked_at).toLocaleString()}` : "active"),
          el("td", {}, key.revoked_at ? "" : el("button", { class: "quiet", onclick: async () => { if (await guarded(() => api.del(`/v1/keys/${key.id}`))) load(); } }, "Revoke")),
        ),
      ),
    );
    if (!list.keys.length) body.append(el("tr", {}, el("td", { colspan: 7, class: "empty" }, "No keys: the server is open to loopback callers.")));
  };
  const form = el(
    "form",
    {
      class: "inline",
      onsubmit: async (event) => {
        event.preventDefault();
        const request = { scope: scope.value, tenant: tenant.value || undefined, session_id: sessionId.value || undefined, name: name.value || undefined };
        const key = await guarded(() => api.post("/v1/keys", request));
        if (!key) return;
        issued.replaceChildren(
          el("p", {}, "The new key — shown this once; copy it now:"),
          el("code", { id: "issued-key" }, key.key),
        );
        if (!api.apiKey() && key.scope === "admin") api.setApiKey(key.key);
        load();
      },
    },
    scope,
    tenant,
    sessionId,
    name,
    el("button", { type: "submit" }, "Create key"),
  );
  page(
    "API keys",
    form,
    issued,
    el("table", {}, el("thead", {}, el("tr", {}, ["Id", "Label", "Scope", "Tenant", "Created", "Status", ""].map((label) => el("th", {}, label)))), body),
  );
  load();
  return () => {};
}

// -- server ----------------------------------------------------------------------------------

function serverPage() {
  const info = el("pre", { class: "info" }, "…");
  const charts = el("div", { class: "charts" });
  const series = [
    new Series("live sessions", (totals) => totals.corral_sessions),
    new Series("executions/s", (totals) => totals.corral_executions_total, { rate: true }),
    new Series("HTTP requests/s", (totals) => totals.corral_http_requests_total, { rate: true }),
    new Series("queued executions", (totals) => totals.corral_execution_queue_depth),
    new Series("worker memory", (totals) => (totals.corral_worker_memory_bytes || 0) / 2 ** 20, { unit: " MiB" }),
  ];
  page("Server", el("h2", {}, "Live metrics"), charts, el("h2", {}, "/v1/info"), info);
  guarded(() => api.get("/v1/info")).then((data) => {
    if (data) info.textContent = JSON.stringify(data, null, 2);
  });
  let last = performance.now();
  return every(2000, async () => {
    const text = await guarded(() => api.get("/metrics"), charts);
    if (typeof text !== "string") return;
    const now = performance.now();
    const totals = parseMetrics(text);
    for (const one of series) one.add(totals, (now - last) / 1000);
    last = now;
    charts.replaceChildren(...series.map((one) => one.view()));
  });
}

// -- routing ---------------------------------------------------------------------------------

function route() {
  stopPage();
  stopPage = () => {};
  const hash = location.hash || "#/sessions";
  const [, section, id] = hash.split("/");
  for (const link of document.querySelectorAll("[data-nav]")) link.classList.toggle("active", link.dataset.nav === section);
  document.getElementById("logout").hidden = !api.apiKey();
  const pages = { login: loginPage, sessions: () => (id ? sessionPage(id) : sessionsPage()), keys: keysPage, server: serverPage };
  stopPage = (pages[section] || sessionsPage)() || (() => {});
}

document.getElementById("logout").addEventListener("click", () => {
  api.setApiKey("");
  location.hash = "#/login";
});
window.addEventListener("hashchange", route);
route();
