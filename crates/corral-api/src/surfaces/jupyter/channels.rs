//! `GET /api/kernels/{kernel_id}/channels`: a kernel's websocket, as jupyter_server serves
//! it. The key is checked (403) and the kernel found (404) before the upgrade; the
//! `v1.kernel.websocket.jupyter.org` subprotocol is accepted when offered, else messages are
//! JSON text frames.
//!
//! Only moves frames: each one read is decoded (`corral-jupyter`) and handed to the
//! kernel's hub; whatever the hub sends this connection is encoded and written.

use std::collections::HashMap;

use axum::extract::rejection::PathRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use corral_core::Principal;
use corral_jupyter::{wire, Frame, Framing, V1_SUBPROTOCOL};
use futures::{SinkExt, StreamExt};

use super::failure::Failure;
use super::kernel_hub::{KernelHub, Outbound};
use super::kernels::live_kernel;
use super::models::JupyterError;
use super::SurfaceContext;
use crate::state::ApiState;

/// Opens the kernel's channels (shell, control, stdin, iopub) on one websocket.
#[utoipa::path(get, path = "/api/kernels/{kernel_id}/channels", tag = "jupyter",
    params(
        ("kernel_id" = String, Path, description = "Kernel id (the corral session id)"),
        ("session_id" = Option<String>, Query, description = "The client's session: messages kept while it has no connection are replayed when it reconnects"),
        ("token" = Option<String>, Query, description = "A corral API key (or `Authorization: token <key>`)"),
    ),
    responses(
        (status = 101, description = "Switching to the websocket (subprotocol `v1.kernel.websocket.jupyter.org` when offered)"),
        (status = 400, description = "Not a websocket upgrade request", body = JupyterError),
        (status = 403, description = "Missing or refused key", body = JupyterError),
        (status = 404, description = "No such running kernel", body = JupyterError),
    ))]
pub async fn kernel_channels(
    State(state): State<ApiState>,
    Extension(context): Extension<SurfaceContext>,
    kernel_id: Result<Path<String>, PathRejection>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    parts: Parts,
) -> Result<Response, Failure> {
    let principal = super::caller(&state, &parts).await?;
    let kernel_id = kernel_id
        .map(|Path(kernel_id)| kernel_id)
        .map_err(|_| Failure::no_route())?;
    let record = live_kernel(&state, &principal, &kernel_id).await?;
    let upgrade = upgrade.map_err(|_| {
        Failure::bad_request("Kernel channels are a websocket: send an upgrade request")
    })?;
    let hub = context
        .kernels
        .hub(&state.engine, &principal, &record)
        .await?;
    let session_key = query.get("session_id").filter(|id| !id.is_empty()).cloned();
    let message_limit = crate::body::max_body_bytes(state.engine.limits().max_code_bytes);
    let engine = state.engine.clone();
    Ok(upgrade
        .protocols([V1_SUBPROTOCOL])
        .max_message_size(message_limit)
        .on_upgrade(move |socket| serve(socket, engine, principal, hub, session_key))
        .into_response())
}

/// Moves frames between one websocket and the kernel's hub until either side ends.
async fn serve(
    socket: WebSocket,
    engine: corral_engine::Engine,
    principal: Principal,
    hub: std::sync::Arc<KernelHub>,
    session_key: Option<String>,
) {
    let framing = Framing::for_subprotocol(
        socket
            .protocol()
            .and_then(|protocol| protocol.to_str().ok()),
    );
    let (connection, mut outbound) = hub.connect(session_key);
    let (mut sink, mut stream) = socket.split();
    let writer = tokio::spawn(async move {
        while let Some(item) = outbound.recv().await {
            let frame = match item {
                Outbound::Message(channel, message) => wire::encode(framing, &channel, &message),
                Outbound::Close => {
                    let _ = sink.send(Message::Close(None)).await;
                    break;
                }
            };
            let message = match frame {
                Frame::Text(text) => Message::Text(text.into()),
                Frame::Binary(bytes) => Message::Binary(bytes.into()),
            };
            if sink.send(message).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(message)) = stream.next().await {
        let frame = match message {
            Message::Text(text) => Frame::Text(text.to_string()),
            Message::Binary(bytes) => Frame::Binary(bytes.to_vec()),
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        match wire::decode(framing, frame) {
            Ok((channel, message)) => {
                hub.handle(&engine, &principal, connection, channel, message)
                    .await;
            }
            Err(error) => {
                tracing::warn!(%error, "jupyter: a websocket frame that is not a message was dropped");
            }
        }
    }
    hub.disconnect(connection);
    writer.abort();
}
