// Rendering execution outputs: streams as text, MIME bundles by their richest safe type
// (PNG/JPEG/SVG as images, HTML in a sandboxed iframe without scripts, else text/plain).

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function bundle(data) {
  if (data["image/png"]) {
    return el("img", { class: "rich", alt: "image/png output", src: `data:image/png;base64,${data["image/png"]}` });
  }
  if (data["image/jpeg"]) {
    return el("img", { class: "rich", alt: "image/jpeg output", src: `data:image/jpeg;base64,${data["image/jpeg"]}` });
  }
  if (data["image/svg+xml"]) {
    const svg = new Blob([data["image/svg+xml"]], { type: "image/svg+xml" });
    return el("img", { class: "rich", alt: "image/svg+xml output", src: URL.createObjectURL(svg) });
  }
  if (data["text/html"]) {
    const frame = el("iframe", { class: "rich html", sandbox: "", title: "text/html output" });
    frame.srcdoc = data["text/html"];
    return frame;
  }
  if (data["text/plain"] !== undefined) {
    return el("pre", { class: "plain" }, data["text/plain"]);
  }
  return el("pre", { class: "plain" }, `[${Object.keys(data).join(", ")}]`);
}

export function stream(name, text) {
  return el("pre", { class: `stream ${name}` }, text);
}

export function error(err) {
  const text = (err.traceback && err.traceback.length ? err.traceback.join("") : `${err.ename}: ${err.evalue}`);
  return el("pre", { class: "stream stderr error" }, stripAnsi(text));
}

export function stripAnsi(text) {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\u001b\[[0-9;]*m/g, "");
}

// The outputs of a finished execution, in order (for history).
export function execution(record) {
  const nodes = [];
  for (const output of record.outputs || []) {
    nodes.push(output.type === "stream" ? stream(output.name, output.text) : bundle(output.data));
  }
  if (record.result) nodes.push(bundle(record.result));
  if (record.error) nodes.push(error(record.error));
  return nodes;
}

export function bytes(count) {
  if (count >= 2 ** 30) return `${(count / 2 ** 30).toFixed(1)} GiB`;
  if (count >= 2 ** 20) return `${(count / 2 ** 20).toFixed(0)} MiB`;
  if (count >= 2 ** 10) return `${(count / 2 ** 10).toFixed(0)} KiB`;
  return `${count} B`;
}

export function countdown(expiresAt) {
  if (!expiresAt) return "—";
  const seconds = Math.max(0, Math.round((new Date(expiresAt) - Date.now()) / 1000));
  const hours = Math.floor(seconds / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  const rest = seconds % 60;
  return hours ? `${hours}h ${minutes}m` : minutes ? `${minutes}m ${rest}s` : `${rest}s`;
}
