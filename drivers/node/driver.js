'use strict';
// corral's JavaScript worker driver (protocol 1; see docs/protocol.md).
//
// Started as `node --expose-internals driver.js` with fd 0 on /dev/null, fds 1 and 2 on pipes
// read by the server and a Unix stream socket on fd 3 carrying length-prefixed JSON frames
// both ways. Node's built-in modules only (`--expose-internals` is for Node's own REPL
// rewrite of top-level `await`, `internal/repl/await`).
//
// Cells run as scripts in the driver's global context, like Node's REPL: top-level `let`,
// `const`, `class` and `function` declarations stay for later cells, `require` resolves from
// the workspace, the completion value of the cell (its last expression) is the result, and a
// cell with top-level `await` is rewritten by Node's REPL transform so its declarations stay
// too. `console.log` writes to fd 1 (synchronous for pipes on Linux). An interrupt (SIGINT)
// stops synchronous code (`breakOnSigint`) and abandons an `await` the cell is waiting on.
//
// Not here: rich display (`display()`), standard input (`input_request`), and interrupting
// code that runs later from a timer or callback.

const fs = require('fs');
const net = require('net');
const util = require('util');
const vm = require('vm');
const path = require('path');
const Module = require('module');

const PROTOCOL_VERSION = 1;
const CONTROL_FD = 3;
const MAX_FRAME = 64 * 1024 * 1024;
const SYNC_PREFIX = '\u0000CORRAL-SYNC:';
const DRIVER_FILE = __filename;

let processTopLevelAwait = null;
try {
  ({ processTopLevelAwait } = require('internal/repl/await'));
} catch (error) {
  processTopLevelAwait = null;
}

const state = {
  current: null, // { id, syncToken, fences, interrupt: function | null }
  buffer: Buffer.alloc(0),
  queue: [],
  busy: false,
  earlyInterrupt: false,
};

const socket = new net.Socket({ fd: CONTROL_FD, readable: true, writable: true });

// ------------------------------------------------------------------------------ frames

function send(obj) {
  if (state.current && ['result', 'error', 'display'].includes(obj.type)) {
    const fence = writeFence();
    if (fence !== null) obj = Object.assign({}, obj, { fence });
  }
  let payload = Buffer.from(JSON.stringify(obj), 'utf8');
  if (payload.length > MAX_FRAME) {
    const note = `<output too large for one frame: ${payload.length} bytes>`;
    const shrunk = Object.assign({}, obj);
    if ('data' in shrunk) shrunk.data = { 'text/plain': note };
    if ('traceback' in shrunk) {
      shrunk.traceback = [note];
      shrunk.evalue = String(shrunk.evalue).slice(0, 10000);
    }
    if ('matches' in shrunk) shrunk.matches = [];
    payload = Buffer.from(JSON.stringify(shrunk), 'utf8');
  }
  const header = Buffer.alloc(4);
  header.writeUInt32BE(payload.length, 0);
  socket.write(Buffer.concat([header, payload]));
}

function takeFrames(chunk) {
  state.buffer = Buffer.concat([state.buffer, chunk]);
  while (state.buffer.length >= 4) {
    const length = state.buffer.readUInt32BE(0);
    if (length > MAX_FRAME) {
      note(`frame of ${length} bytes exceeds the protocol limit`);
      process.exit(2);
    }
    if (state.buffer.length < 4 + length) break;
    const body = state.buffer.subarray(4, 4 + length).toString('utf8');
    state.buffer = state.buffer.subarray(4 + length);
    let message;
    try {
      message = JSON.parse(body);
    } catch (error) {
      note(`undecodable frame ignored: ${error.message}`);
      continue;
    }
    if (message && typeof message === 'object' && !Array.isArray(message)) {
      state.queue.push(message);
    }
  }
}

/** Reads what is waiting on the (non-blocking) control socket now, without the event loop. */
function readWaitingFrames() {
  const chunk = Buffer.alloc(64 * 1024);
  for (;;) {
    let count = 0;
    try {
      count = fs.readSync(CONTROL_FD, chunk, 0, chunk.length, null);
    } catch (error) {
      return; // EAGAIN: nothing more waiting
    }
    if (count === 0) return;
    takeFrames(chunk.subarray(0, count));
  }
}

socket.on('data', (chunk) => {
  takeFrames(chunk);
  serveQueue();
});
socket.on('end', () => process.exit(0));
socket.on('error', () => process.exit(0));

function note(text) {
  try {
    writeAll(2, Buffer.from(`corral driver: ${text}\n`, 'utf8'));
  } catch (error) {
    // nowhere left to say it
  }
}

// ------------------------------------------------------------------------------ streams

function writeAll(fd, data) {
  let offset = 0;
  let waited = 0;
  while (offset < data.length) {
    try {
      offset += fs.writeSync(fd, data, offset);
    } catch (error) {
      if (error.code === 'EAGAIN' && waited < 3000) {
        waited += 1;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
        continue;
      }
      throw error;
    }
  }
}

function writeMarker(suffix) {
  const marker = Buffer.from(`${SYNC_PREFIX}${state.current.syncToken}${suffix}\u0000`, 'utf8');
  for (const fd of [1, 2]) {
    try {
      writeAll(fd, marker);
    } catch (error) {
      return false;
    }
  }
  return true;
}

function writeFence() {
  if (!state.current || !state.current.syncToken) return null;
  state.current.fences += 1;
  const fence = state.current.fences;
  return writeMarker(`.${fence}`) ? fence : null;
}

// ------------------------------------------------------------------------------ values

function bundle(value) {
  const data = { 'text/plain': util.inspect(value, { depth: 4, colors: false }) };
  return data;
}

const INTERNAL_FRAME = /\((node:|internal\/)|^\s*at (node:|internal\/)|at new Script \(|at Script\.runInThisContext|at runCell \(|at serveExec \(/;

function errorFrame(id, error) {
  let ename = 'Error';
  let evalue = '';
  let traceback = [];
  if (error !== null && typeof error === 'object' && error.code === 'ERR_SCRIPT_EXECUTION_INTERRUPTED') {
    return { type: 'error', id, ename: INTERRUPTED, evalue: String(error.message), traceback: [`${INTERRUPTED}: ${error.message}`] };
  }
  if (error !== null && typeof error === 'object') {
    try {
      ename = String(error.name || (error.constructor && error.constructor.name) || 'Error');
      evalue = String(error.message === undefined ? '' : error.message);
      const stack = typeof error.stack === 'string' ? error.stack : `${ename}: ${evalue}`;
      traceback = stack
        .split('\n')
        .filter((line) => !INTERNAL_FRAME.test(line) && !line.includes(DRIVER_FILE));
    } catch (inner) {
      traceback = [`${ename}: ${evalue}`];
    }
  } else {
    ename = 'Uncaught';
    evalue = util.inspect(error);
    traceback = [`Uncaught ${evalue}`];
  }
  return { type: 'error', id, ename, evalue, traceback };
}

// ------------------------------------------------------------------------------ cells

/** Compiles a cell: a Script, or, for top-level `await`, the REPL's async rewrite. */
function compile(code, filename) {
  try {
    return { script: new vm.Script(code, { filename }), wrapped: false };
  } catch (error) {
    if (!(error instanceof SyntaxError) || !processTopLevelAwait || !code.includes('await')) {
      throw error;
    }
    let rewritten = null;
    try {
      rewritten = processTopLevelAwait(code);
    } catch (rewriteError) {
      rewritten = null;
    }
    if (rewritten === null) throw error;
    return { script: new vm.Script(rewritten, { filename }), wrapped: true };
  }
}

// An interrupted cell's error is named `KeyboardInterrupt` in every driver (the protocol's
// name for it, docs/protocol.md).
const INTERRUPTED = 'KeyboardInterrupt';

function interruptedError() {
  const error = new Error('Script execution was interrupted by `SIGINT`');
  error.code = 'ERR_SCRIPT_EXECUTION_INTERRUPTED';
  return error;
}

async function runCell(code, filename) {
  const { script, wrapped } = compile(code, filename);
  let value = script.runInThisContext({ breakOnSigint: true, displayErrors: false });
  if (!wrapped) return value;
  const interrupted = new Promise((resolve, reject) => {
    state.current.interrupt = () => reject(interruptedError());
  });
  const outcome = await Promise.race([value, interrupted]);
  return outcome && typeof outcome === 'object' ? outcome.value : undefined;
}

async function serveExec(message) {
  const id = String(message.id);
  const count = Number(message.execution_count) || 0;
  state.current = {
    id,
    syncToken: String(message.sync_token || ''),
    fences: 0,
    interrupt: null,
  };
  let status = 'ok';
  try {
    if (state.earlyInterrupt) {
      state.earlyInterrupt = false;
      throw interruptedError();
    }
    const value = await runCell(String(message.code || ''), `<cell ${count}>`);
    if (value !== undefined) {
      send({ type: 'result', id, execution_count: count, data: bundle(value), metadata: {} });
    }
  } catch (error) {
    status = 'error';
    send(errorFrame(id, error));
  }
  if (state.current.syncToken) writeMarker('');
  state.current = null;
  send({ type: 'done', id, status });
}

// ------------------------------------------------------------------------------ questions

const KEYWORDS = ['await', 'async', 'break', 'case', 'catch', 'class', 'const', 'continue',
  'debugger', 'default', 'delete', 'do', 'else', 'export', 'extends', 'false', 'finally',
  'for', 'function', 'if', 'import', 'in', 'instanceof', 'let', 'new', 'null', 'return',
  'super', 'switch', 'this', 'throw', 'true', 'try', 'typeof', 'undefined', 'var', 'void',
  'while', 'with', 'yield'];

function propertyNames(object) {
  const names = new Set();
  for (let o = object; o !== null && o !== undefined; o = Object.getPrototypeOf(o)) {
    for (const name of Object.getOwnPropertyNames(o)) names.add(name);
  }
  return [...names];
}

function complete(message) {
  const code = String(message.code || '');
  const chars = [...code];
  const cursor = Math.min(Math.max(Number(message.cursor_pos) || 0, 0), chars.length);
  const before = chars.slice(0, cursor).join('');
  const match = /([A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*)?\.?([A-Za-z_$][\w$]*)?$/.exec(before);
  let matches = [];
  let prefix = '';
  if (match) {
    const text = match[0];
    const dot = text.lastIndexOf('.');
    prefix = dot >= 0 ? text.slice(dot + 1) : text;
    let names;
    if (dot >= 0) {
      try {
        const base = vm.runInThisContext(text.slice(0, dot), { timeout: 1000 });
        names = propertyNames(base);
      } catch (error) {
        names = [];
      }
    } else {
      names = propertyNames(globalThis).concat(KEYWORDS);
    }
    matches = [...new Set(names.filter((name) => name.startsWith(prefix)))].sort();
  }
  const prefixChars = [...prefix].length;
  send({
    type: 'complete_reply',
    id: message.id,
    matches,
    cursor_start: cursor - prefixChars,
    cursor_end: cursor,
  });
}

function isComplete(message) {
  let status = 'complete';
  try {
    compile(String(message.code || ''), '<is_complete>');
  } catch (error) {
    status = error instanceof SyntaxError && /Unexpected end of input|Unterminated/.test(error.message)
      ? 'incomplete' : 'invalid';
  }
  send({ type: 'is_complete_reply', id: message.id, status, indent: '' });
}

function evaluate(message) {
  const results = [];
  for (const pair of Array.isArray(message.expressions) ? message.expressions : []) {
    const [name, expression] = pair;
    try {
      const value = vm.runInThisContext(String(expression), { timeout: 5000 });
      results.push([name, { status: 'ok', data: bundle(value), metadata: {} }]);
    } catch (error) {
      const frame = errorFrame('', error);
      results.push([name, {
        status: 'error', ename: frame.ename, evalue: frame.evalue, traceback: frame.traceback,
      }]);
    }
  }
  send({ type: 'evaluate_reply', id: message.id, results });
}

// ------------------------------------------------------------------------------ loop

async function serveQueue() {
  if (state.busy) return;
  state.busy = true;
  try {
    while (state.queue.length > 0) {
      const message = state.queue.shift();
      const kind = message.type;
      if (kind !== 'exec') state.earlyInterrupt = false;
      try {
        if (kind === 'exec') await serveExec(message);
        else if (kind === 'complete') complete(message);
        else if (kind === 'inspect') send({ type: 'inspect_reply', id: message.id, found: false, data: {} });
        else if (kind === 'is_complete') isComplete(message);
        else if (kind === 'evaluate') evaluate(message);
        else if (kind === 'shutdown') process.exit(0);
        else if (kind === 'input_reply') { /* no cell waits for input */ }
        else note(`unknown frame type ${JSON.stringify(kind)} ignored`);
      } catch (error) {
        note(`internal error: ${error && error.stack}`);
      }
    }
  } finally {
    state.busy = false;
  }
}

process.on('SIGINT', () => {
  if (state.current) {
    if (state.current.interrupt) state.current.interrupt();
    return;
  }
  // The server interrupts only while an exec is outstanding: one not yet started (still in
  // the socket, or queued) is it. One that arrives between cells is ignored.
  readWaitingFrames();
  if (state.buffer.length > 0 || state.queue.some((m) => m.type === 'exec')) {
    state.earlyInterrupt = true;
    serveQueue();
  }
});

// A cell's timers and promises may fail after it finished: say so on stderr, keep running.
process.on('uncaughtException', (error) => {
  note(`uncaught exception: ${error && error.stack ? error.stack : util.inspect(error)}`);
});
process.on('unhandledRejection', (reason) => {
  note(`unhandled promise rejection: ${reason && reason.stack ? reason.stack : util.inspect(reason)}`);
});

// What cells see besides JavaScript's and Node's globals.
const workspace = process.cwd();
const cellRequire = Module.createRequire(path.join(workspace, '<cell>'));
globalThis.require = cellRequire;
globalThis.module = { exports: {}, require: cellRequire, id: '<cell>', filename: path.join(workspace, '<cell>') };
globalThis.exports = globalThis.module.exports;
globalThis.__dirname = workspace;
globalThis.__filename = path.join(workspace, '<cell>');

send({
  type: 'ready',
  protocol: PROTOCOL_VERSION,
  language: 'javascript',
  language_version: process.versions.node,
  pid: process.pid,
});
