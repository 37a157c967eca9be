//! `GET /v1/nodes` (admin): the nodes of the fleet sharing this store, their leases and load.
//! A single node (SQLite store) lists none.

use axum::extract::State;
use axum::Json;

use crate::auth::Caller;
use crate::problem::{Problem, ProblemBody};
use crate::state::ApiState;
use crate::views::{NodeList, NodeView};

/// The fleet's nodes, by id (admin keys only).
#[utoipa::path(get, path = "/v1/nodes", tag = "system",
    responses(
        (status = 200, description = "Every registered node, by id", body = NodeList),
        (status = 401, description = "No valid API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Only admin keys list nodes", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn list_nodes(
    State(state): State<ApiState>,
    Caller(caller): Caller,
) -> Result<Json<NodeList>, Problem> {
    let now = chrono::Utc::now();
    let nodes = state.engine.nodes(&caller).await?;
    Ok(Json(NodeList {
        nodes: nodes
            .into_iter()
            .map(|node| NodeView::new(node, now))
            .collect(),
    }))
}
