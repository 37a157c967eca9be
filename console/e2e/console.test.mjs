// End-to-end test of the web console in Debian's headless Chromium, driven by Playwright
// (playwright-core, no downloaded browsers): a real corral server that requires a key, the
// login form, a new session, a cell that prints and one that draws a PNG (both rendered),
// an uploaded file read from code, the keys and server pages, and closing the session.
// Screenshots go to target/console-screenshots/. Run by scripts/test:
//   CORRAL_BIN=target/debug/corral CORRAL_TEST_PYTHON=target/venv/bin/python node console/e2e/console.test.mjs

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const root = resolve(new URL("../..", import.meta.url).pathname);
const binary = resolve(root, process.env.CORRAL_BIN || "target/debug/corral");
const python = process.env.CORRAL_TEST_PYTHON || "python3";
const shots = join(root, "target", "console-screenshots");
const DEADLINE_MS = 60_000;
mkdirSync(shots, { recursive: true });

const work = mkdtempSync(join(tmpdir(), "corral-console-"));
const dataDir = join(work, "data");
const profile = join(work, "chromium-profile");

function startServer() {
  const server = spawn(binary, ["serve", "--bind", "127.0.0.1:0", "--data-dir", dataDir, "--python", python], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, CORRAL_LOG: "info" },
  });
  let log = "";
  const url = new Promise((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`corral did not start:\n${log}`)), DEADLINE_MS);
    server.stderr.on("data", (chunk) => {
      log += chunk;
      const match = log.match(/listening on (http:\/\/\S+)/);
      if (match) {
        clearTimeout(timer);
        resolveUrl(match[1]);
      }
    });
    server.on("exit", (code) => reject(new Error(`corral exited (${code}):\n${log}`)));
  });
  return { server, url };
}

async function stopServer(server) {
  if (server.exitCode !== null) return;
  const exited = new Promise((done) => server.on("exit", done));
  server.kill("SIGTERM");
  const timer = setTimeout(() => server.kill("SIGKILL"), 40_000);
  await exited;
  clearTimeout(timer);
}

async function api(url, key, method, path) {
  const response = await fetch(url + path, { method, headers: { authorization: `Bearer ${key}` } });
  return response.json();
}

// A key made offline before the server starts: the server requires keys from the start.
const key = execFileSync(binary, ["keys", "create", "--scope", "admin", "--name", "console-e2e", "--data-dir", dataDir], { stdio: ["ignore", "pipe", "ignore"] })
  .toString()
  .trim();
const { server, url: serverUrl } = startServer();
let context;
let failed = false;
try {
  const url = await serverUrl;
  context = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
    viewport: { width: 1280, height: 900 },
    acceptDownloads: true,
  });
  context.setDefaultTimeout(DEADLINE_MS);
  const page = context.pages()[0] || (await context.newPage());
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));

  // The page needs the key: it asks for one.
  await page.goto(`${url}/console`);
  await page.waitForURL(/#\/login$/);
  await page.fill("input[name=key]", "corral_000000000000_wrongwrongwrongwrongwrong");
  await page.click("button[type=submit]");
  await page.getByText("That key was refused.").waitFor();
  await page.fill("input[name=key]", key);
  await page.click("button[type=submit]");
  await page.waitForURL(/#\/sessions$/);
  await page.screenshot({ path: join(shots, "01-sessions-empty.png") });

  // A new session, then a cell that prints.
  await page.fill("input[aria-label='Session name']", "console-e2e");
  await page.click("#new-session");
  await page.waitForURL(/#\/sessions\/[0-9a-f-]{36}$/);
  const sessionId = page.url().split("/").pop();
  await page.locator("dl.summary .state.idle").waitFor();
  // A live session reports what its processes use (PSS).
  await page.locator("dl.summary dt:text-is('Memory used') + dd", { hasText: /^\d+ (KiB|MiB)$/ }).waitFor();
  await page.fill("#code", "for i in range(3):\n    print('hello from the console', i)");
  await page.click("#run");
  const printed = page.locator(".cell pre.stream.stdout").last();
  await printed.filter({ hasText: "hello from the console 2" }).waitFor();
  assert.equal(await printed.textContent(), "hello from the console 0\nhello from the console 1\nhello from the console 2\n");
  await page.screenshot({ path: join(shots, "02-printed.png") });

  // A cell that draws: the PNG is rendered as an image.
  await page.fill("#code", "import matplotlib.pyplot as plt\nplt.plot([1, 4, 2, 5])\nplt.title('drawn in corral');");
  await page.keyboard.press("Shift+Enter");
  const image = page.locator(".cell img.rich[src^='data:image/png;base64,']").last();
  await image.waitFor();
  const size = await image.evaluate((img) => img.decode().then(() => [img.naturalWidth, img.naturalHeight]));
  assert.ok(size[0] > 100 && size[1] > 100, `a real image: ${size}`);
  await page.screenshot({ path: join(shots, "03-png.png") });

  // Upload a file, then read it from code.
  const local = join(work, "upload.txt");
  writeFileSync(local, "uploaded through the console\n");
  await page.setInputFiles("#upload", local);
  await page.locator(".files td", { hasText: "upload.txt" }).waitFor();
  await page.fill("#code", "open('upload.txt').read().upper()");
  await page.click("#run");
  await page.locator(".cell pre.plain", { hasText: "'UPLOADED THROUGH THE CONSOLE\\n'" }).waitFor();
  // And download it back.
  const [download] = await Promise.all([page.waitForEvent("download"), page.locator(".files tr", { hasText: "upload.txt" }).getByText("Download").click()]);
  assert.equal(download.suggestedFilename(), "upload.txt");
  await page.screenshot({ path: join(shots, "04-file.png") });

  // History survives a reload.
  await page.reload();
  await page.locator(".cell pre.source", { hasText: "hello from the console" }).waitFor();
  await page.locator(".cell img.rich").first().waitFor();

  // The sessions page lists it, live.
  await page.click("a[data-nav=sessions]");
  await page.locator(`tr[data-session='${sessionId}'] .state`).waitFor();
  assert.match(await page.locator(`tr[data-session='${sessionId}']`).textContent(), /console-e2e.*idle.*python/);
  await page.screenshot({ path: join(shots, "05-sessions.png") });

  // Keys: create one (shown once), see it listed, revoke it.
  await page.click("a[data-nav=keys]");
  await page.selectOption("select[name=scope]", "tenant");
  await page.fill("input[name=tenant]", "acme");
  await page.fill("input[name=name]", "made in the console");
  await page.click("form.inline button[type=submit]");
  const issued = (await page.locator("#issued-key").textContent()).trim();
  assert.match(issued, /^corral_/);
  const row = page.locator("tr", { hasText: "made in the console" });
  await row.getByText("Revoke").click();
  await row.getByText(/^revoked/).waitFor();
  await page.screenshot({ path: join(shots, "06-keys.png") });

  // The server: /v1/info and live charts.
  await page.click("a[data-nav=server]");
  await page.locator("pre.info", { hasText: "runtimes" }).waitFor();
  // Charts draw a line once two samples came in (one every 2 s).
  await page.locator("figure.chart svg.spark path[d*='L']").first().waitFor({ state: "attached" });
  await page.screenshot({ path: join(shots, "07-server.png") });

  // Close the session from its page.
  await page.goto(`${url}/console#/sessions/${sessionId}`);
  await page.locator("dl.summary .state.idle").waitFor();
  await page.click("#session-close");
  await page.waitForURL(/#\/sessions$/);
  const closed = await api(url, key, "GET", `/v1/sessions/${sessionId}`);
  assert.equal(closed.state, "closed");

  assert.deepEqual(errors, [], "no script errors");
  console.log(`console e2e: ok (screenshots in ${shots})`);
} catch (error) {
  failed = true;
  console.error(error);
  try {
    const page = context && context.pages()[0];
    if (page) await page.screenshot({ path: join(shots, "failure.png") });
  } catch {
    // the browser is gone
  }
} finally {
  if (context) await context.close();
  await stopServer(server);
  rmSync(work, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
