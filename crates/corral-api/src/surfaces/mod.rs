//! One module per API surface. Each translates its clients' JSON to engine calls; surfaces
//! never import each other.

pub mod agents;
pub mod e2b;
pub mod e2b_sdk;
pub mod jupyter;
pub mod native;
pub mod python_rce;
pub mod qiskit;
