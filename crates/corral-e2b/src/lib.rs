//! `corral-e2b`: what today's E2B SDKs (`e2b` 2.x, `e2b-code-interpreter` 2.x) say and expect,
//! as pure code — no HTTP, no axum, no engine.
//!
//! It owns the control-plane models (`control`: `NewSandbox`, `Sandbox`, `ListedSandbox`,
//! list filters, template names), the code interpreter's wire shapes (`interpreter`: the
//! newline-delimited JSON lines of `POST /execute`, contexts), the sandbox daemon's messages
//! (`envd`: the `filesystem` and `process` services in their protobuf-JSON mapping, the
//! `/files` replies and a `multipart/form-data` reader), the Connect protocol's framing
//! (`connect`) and the Python run inside a session to carry out envd operations there
//! (`in_sandbox`).
//!
//! Connect is written by hand rather than with `connectrpc`/`prost`/`protox`: the SDK's
//! envd clients use the JSON codec (`ENVD_JSON_CODEC`, no compression), so all that is
//! needed is the unary JSON form (a JSON body, errors as `{code, message}` with a mapped
//! HTTP status) and the streaming envelope (1 flag byte, a 4-byte big-endian length, the
//! message; flag `0x02` ends the stream with a JSON trailer). That is some 150 lines with
//! tests here, against a protobuf toolchain at build time (or vendored generated code) and a
//! Connect server stack whose binary codec no supported client would use. A binary-protobuf
//! request is answered with a clear `unimplemented` error instead.
//!
//! Deliberately not here: routing, authentication, engine calls and status-code choices for
//! corral's own errors (all in `corral-api`'s `e2b_sdk` surface).

pub mod connect;
pub mod control;
pub mod envd;
pub mod in_sandbox;
pub mod interpreter;

/// The envd version corral reports. The SDK switches features on by it
/// (`e2b/envd/versions.py`): from 0.4.0 it sends no default-user header or `username`; 0.5.2
/// allows closing a command's stdin; 0.5.7 lets it upload file-like data as a raw
/// `application/octet-stream` body (without `Content-Encoding: gzip`, which corral refuses).
/// It stays below 0.6.2 (file metadata as extended attributes), which corral does not
/// implement.
pub const ENVD_VERSION: &str = "0.5.7";

/// The port the SDK names for envd (`E2b-Sandbox-Port`).
pub const ENVD_PORT: u16 = 49983;
/// The port the code interpreter SDK names for its Jupyter-backed server.
pub const CODE_INTERPRETER_PORT: u16 = 49999;
